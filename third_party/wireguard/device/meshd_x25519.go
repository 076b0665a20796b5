/* SPDX-License-Identifier: BSD-3-Clause
 *
 * meshd patch: X25519 at the cost of one scalar multiplication.
 * x25519ScalarMult is Go's crypto/ecdh x25519ScalarMult (Copyright 2022
 * The Go Authors, BSD-3-Clause), on filippo.io/edwards25519/field, the
 * same field arithmetic (and amd64 assembly) the standard library uses.
 *
 * Why: golang.org/x/crypto/curve25519 now wraps crypto/ecdh, whose
 * NewPrivateKey computes the private key's public key before every
 * ECDH: ScalarMult cost two Montgomery ladders, ScalarBaseMult two as
 * well. See README.meshd.md.
 */

package device

import (
	"filippo.io/edwards25519"
	"filippo.io/edwards25519/field"
)

// x25519 sets dst to X25519(scalar, point) (RFC 7748: the scalar is
// clamped, the point's top bit ignored).
func x25519(dst, scalar, point *[32]byte) {
	var e [32]byte
	copy(e[:], scalar[:])
	e[0] &= 248
	e[31] &= 127
	e[31] |= 64

	var x1, x2, z2, x3, z3, tmp0, tmp1 field.Element
	x1.SetBytes(point[:])
	x2.One()
	x3.Set(&x1)
	z3.One()

	swap := 0
	for pos := 254; pos >= 0; pos-- {
		b := e[pos/8] >> uint(pos&7)
		b &= 1
		swap ^= int(b)
		x2.Swap(&x3, swap)
		z2.Swap(&z3, swap)
		swap = int(b)

		tmp0.Subtract(&x3, &z3)
		tmp1.Subtract(&x2, &z2)
		x2.Add(&x2, &z2)
		z2.Add(&x3, &z3)
		z3.Multiply(&tmp0, &x2)
		z2.Multiply(&z2, &tmp1)
		tmp0.Square(&tmp1)
		tmp1.Square(&x2)
		x3.Add(&z3, &z2)
		z2.Subtract(&z3, &z2)
		x2.Multiply(&tmp1, &tmp0)
		tmp1.Subtract(&tmp1, &tmp0)
		z2.Square(&z2)

		z3.Mult32(&tmp1, 121666)
		x3.Square(&x3)
		tmp0.Add(&tmp0, &z3)
		z3.Multiply(&x1, &z2)
		z2.Multiply(&tmp1, &tmp0)
	}

	x2.Swap(&x3, swap)
	z2.Swap(&z3, swap)

	z2.Invert(&z2)
	x2.Multiply(&x2, &z2)
	copy(dst[:], x2.Bytes())
}

// x25519Base sets dst to X25519(scalar, 9), the public key of scalar, by
// a fixed-base multiplication on the birationally equivalent Edwards
// curve (several times cheaper than the ladder).
func x25519Base(dst, scalar *[32]byte) {
	s, err := edwards25519.NewScalar().SetBytesWithClamping(scalar[:])
	if err != nil {
		panic("wireguard: clamping a 32-byte scalar failed: " + err.Error()) // only for a wrong length
	}
	copy(dst[:], new(edwards25519.Point).ScalarBaseMult(s).BytesMontgomery())
}
