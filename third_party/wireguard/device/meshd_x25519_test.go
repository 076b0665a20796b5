/* SPDX-License-Identifier: MIT
 *
 * meshd patch: x25519 and x25519Base against golang.org/x/crypto/curve25519.
 * Run from meshd's module: go test golang.zx2c4.com/wireguard/device -run X25519
 */

package device

import (
	"crypto/rand"
	"testing"

	"golang.org/x/crypto/curve25519"
)

func TestMeshdX25519(t *testing.T) {
	for i := 0; i < 200; i++ {
		var sk, pk [32]byte
		rand.Read(sk[:])
		rand.Read(pk[:])
		if i%2 == 0 { // a real public key half the time
			p, _ := curve25519.X25519(pk[:], curve25519.Basepoint)
			copy(pk[:], p)
		}
		var got, want [32]byte
		x25519(&got, &sk, &pk)
		curve25519.ScalarMult(&want, &sk, &pk)
		if got != want {
			t.Fatalf("x25519(%x, %x) = %x, want %x", sk, pk, got, want)
		}
		x25519Base(&got, &sk)
		curve25519.ScalarBaseMult(&want, &sk)
		if got != want {
			t.Fatalf("x25519Base(%x) = %x, want %x", sk, got, want)
		}
	}
}

func BenchmarkMeshdX25519(b *testing.B) {
	var sk, pk, out [32]byte
	rand.Read(sk[:])
	curve25519.ScalarBaseMult(&pk, &sk)
	b.Run("patched", func(b *testing.B) {
		for b.Loop() {
			x25519(&out, &sk, &pk)
		}
	})
	b.Run("x-crypto", func(b *testing.B) {
		for b.Loop() {
			curve25519.ScalarMult(&out, &sk, &pk)
		}
	})
	b.Run("base-patched", func(b *testing.B) {
		for b.Loop() {
			x25519Base(&out, &sk)
		}
	})
	b.Run("base-x-crypto", func(b *testing.B) {
		for b.Loop() {
			curve25519.ScalarBaseMult(&out, &sk)
		}
	})
}
