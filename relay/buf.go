package relay

import "sync"

// pbuf is a pooled packet buffer. Most packets are WireGuard-sized, so two
// size classes keep a queued packet from pinning a 64 KiB buffer.
type pbuf struct {
	b []byte
}

const smallBuf = 2 << 10

var (
	smallPool = sync.Pool{New: func() any { return &pbuf{b: make([]byte, smallBuf)} }}
	largePool = sync.Pool{New: func() any { return &pbuf{b: make([]byte, MaxFrame)} }}
)

// getBuf returns a buffer with len(b) == n; n must be <= MaxFrame.
func getBuf(n int) *pbuf {
	var p *pbuf
	if n <= smallBuf {
		p = smallPool.Get().(*pbuf)
	} else {
		p = largePool.Get().(*pbuf)
	}
	p.b = p.b[:n]
	return p
}

// putBuf returns p to its pool; p must not be used afterwards.
func putBuf(p *pbuf) {
	if p == nil {
		return
	}
	if cap(p.b) == smallBuf {
		smallPool.Put(p)
	} else {
		largePool.Put(p)
	}
}
