/* SPDX-License-Identifier: MIT
 *
 * meshd patch: key material made off a cold handshake's critical path
 * (see README.meshd.md at the root of this copy).
 */

package device

// ephemeral is one handshake's ephemeral key pair.
type ephemeral struct {
	sk NoisePrivateKey
	pk NoisePublicKey
}

// ephemeralAhead is how many ephemeral key pairs a device keeps made ahead
// of the handshakes that will use them: a first handshake then spends no
// X25519 base-point multiplication on them (one of the two initiation's
// three, one of the response's three). Each pair is taken once (a channel
// receive) and never reused; a handshake that finds none makes its own.
const ephemeralAhead = 2

// ephemeralMaker fills device.ephemerals until the device closes. It is
// blocked on the channel send while the pool is full: no cost while no
// handshake happens.
func (device *Device) ephemeralMaker() {
	defer close(device.ephemeralsDone)
	for {
		e, err := newEphemeral()
		if err != nil {
			return // crypto/rand failed: handshakes make their own (and fail alike)
		}
		select {
		case device.ephemerals <- e:
		case <-device.closed:
			return
		}
	}
}

// takeEphemeral returns a fresh ephemeral key pair, made ahead if one is
// ready.
func (device *Device) takeEphemeral() (NoisePrivateKey, NoisePublicKey, error) {
	select {
	case e := <-device.ephemerals:
		return e.sk, e.pk, nil
	default:
	}
	e, err := newEphemeral()
	return e.sk, e.pk, err
}

func newEphemeral() (e ephemeral, err error) {
	e.sk, err = newPrivateKey()
	if err == nil {
		e.pk = e.sk.publicKey()
	}
	return e, err
}

// StaticStaticFunc returns the X25519 of the device's private key (whose
// public key is local) and a peer's public key remote, if its caller has
// it at hand; ok false makes the device compute it.
type StaticStaticFunc func(local, remote NoisePublicKey) (ss [NoisePublicKeySize]byte, ok bool)

// SetStaticStatic gives the device a source of the static-static X25519 it
// precomputes for each new peer (NewPeer) and after a private key change.
// A caller that already computes that secret for its own use (meshd's path
// probes and session proof) saves the device one X25519 on a cold peer's
// first handshake. The source must return exactly X25519(private, remote)
// for the private key whose public key is local, or ok false.
func (device *Device) SetStaticStatic(f StaticStaticFunc) {
	device.staticStatic.Store(&f)
}

// precomputeStaticStatic is what NewPeer and SetPrivateKey store as a
// peer's precomputedStaticStatic. Called with staticIdentity locked.
func (device *Device) precomputeStaticStatic(remote NoisePublicKey) [NoisePublicKeySize]byte {
	if f := device.staticStatic.Load(); f != nil && *f != nil {
		if ss, ok := (*f)(device.staticIdentity.publicKey, remote); ok {
			return ss
		}
	}
	ss, _ := device.staticIdentity.privateKey.sharedSecret(remote)
	return ss
}
