package node

import (
	"crypto/rand"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/config"
	"github.com/meshd/meshd/internal/echo"
	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/internal/wire"
)

// TestReloadExportPolicy (SPEC §10, README "Operations"): two nodes
// in-process. A reload of the exporter that changes an export's allow list
// and weight applies to the next streams (the importer's connection is
// refused as not allowed, its catalog carries the new weight) and leaves a
// connection already open through the export alone; a reload that allows
// the importer again lets new connections through. In maintenance the
// exporter answers a new stream "denied: maintenance". A reload that
// removes the export takes it out of the importer's catalog and refuses
// new streams, while the open connection finishes normally.
func TestReloadExportPolicy(t *testing.T) {
	dir, err := os.MkdirTemp("", "meshd-reload-policy")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	backend, err := echo.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	ck := make([]byte, 32)
	rand.Read(ck)
	ec := testConfig(t, dir, "exp", "cloud", ck)
	ec.Exports = []config.Export{{Name: "a", Target: backend.Addr(), Weight: 1}}
	e, err := New(ec, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ic := testConfig(t, dir, "imp", "onprem", ck)
	ic.Cluster.Join = []string{e.GossipAddr().String()}
	ic.Imports = []config.Import{{Name: "a", Listen: loop, Balance: config.BalanceLeastConn, ConnectTimeout: 500 * time.Millisecond}}
	i, err := New(ic, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := i.Start(); err != nil {
		t.Fatal(err)
	}
	defer i.Close()
	imp := i.importList()[0].ln.Addr().String()

	// roundTrip sends msg on c and reads the echo.
	roundTrip := func(c net.Conn, msg string) error {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		defer c.SetDeadline(time.Time{})
		if _, err := c.Write([]byte(msg)); err != nil {
			return err
		}
		buf := make([]byte, len(msg))
		_, err := io.ReadFull(c, buf)
		return err
	}
	// open dials the import and checks one round trip; nil on failure.
	open := func() net.Conn {
		c, err := net.DialTimeout("tcp", imp, 2*time.Second)
		if err != nil {
			return nil
		}
		if roundTrip(c, "ping") != nil {
			c.Close()
			return nil
		}
		return c
	}
	testutil.Until(t, 15*time.Second, "the import to work", func() bool {
		c := open()
		if c != nil {
			c.Close()
		}
		return c != nil
	})
	// The allow lists below are judged by the importer's identity, which
	// the exporter learns from the importer's gossip record: that may come
	// a tick after the importer already uses the exporter's.
	testutil.Until(t, 5*time.Second, "the exporter to know the importer", func() bool {
		return e.peerIdentity(i.tun.PublicKey()) != nil
	})
	held := open()
	if held == nil {
		t.Fatal("held connection failed")
	}
	defer held.Close()

	// Allow only a site the importer is not in, and weight 7.
	deny := clone(ec)
	deny.Exports[0].Allow = []string{"site:elsewhere"}
	deny.Exports[0].Weight = 7
	if err := e.Reload(deny); err != nil {
		t.Fatal(err)
	}
	if c := open(); c != nil {
		c.Close()
		t.Fatal("a new connection got through an export whose allow list a reload narrowed")
	}
	testutil.Until(t, 5*time.Second, "the importer to count the refusal", func() bool {
		return i.Status().Imports[0].Denied >= 1
	})
	if d := e.exportMap()["a"].denied.Load(); d < 1 {
		t.Errorf("exporter counted %d refused streams; want at least 1", d)
	}
	testutil.Until(t, 5*time.Second, "the importer's catalog to carry weight 7", func() bool {
		eps := i.catalog.Load().services["a"]
		return len(eps) == 1 && eps[0].weight == 7
	})
	if err := roundTrip(held, "still open after the reload"); err != nil {
		t.Errorf("a connection open before the reload broke: %v", err)
	}

	// Allow the importer's site again: new connections pass.
	allow := clone(deny)
	allow.Exports[0].Allow = []string{"site:onprem"}
	if err := e.Reload(allow); err != nil {
		t.Fatal(err)
	}
	if c := open(); c == nil {
		t.Error("a new connection failed after a reload allowed the importer's site")
	} else {
		c.Close()
	}

	// Maintenance: a new stream is answered denied: maintenance.
	e.SetMaintenance(true, "test")
	_, _, resp := e.exportFor(i.tun.PublicKey(), wire.Request{Service: "a"})
	if resp == nil || resp.Status != wire.StatusDenied || resp.Message != MaintenanceMessage {
		t.Errorf("stream open during maintenance answered %+v; want denied: %s", resp, MaintenanceMessage)
	}
	if err := roundTrip(held, "still open in maintenance"); err != nil {
		t.Errorf("a connection open before maintenance broke: %v", err)
	}
	e.SetMaintenance(false, "")
	if _, release, resp := e.exportFor(i.tun.PublicKey(), wire.Request{Service: "a"}); resp != nil {
		t.Errorf("stream open after maintenance off answered %+v; want admitted", resp)
	} else {
		release()
	}

	// The export removed: it leaves the importer's catalog and refuses new
	// streams; the open connection through it finishes normally.
	gone := clone(allow)
	gone.Exports = nil
	if err := e.Reload(gone); err != nil {
		t.Fatal(err)
	}
	if len(e.retiredX) != 1 {
		t.Fatalf("retired exports after the removal: %d; want a, with the held stream active", len(e.retiredX))
	}
	// The connection opened (and closed) after the allow list was widened
	// may still be counted until the exporter's side sees its end: the
	// count settles at the held one.
	testutil.Until(t, 5*time.Second, "the retired export to count only the held stream active", func() bool {
		return e.retiredX[0].active.Load() == 1
	})
	if _, _, resp := e.exportFor(i.tun.PublicKey(), wire.Request{Service: "a"}); resp == nil || resp.Status != wire.StatusUnknownService {
		t.Errorf("stream open to a removed export answered %+v; want unknown service", resp)
	}
	testutil.Until(t, 5*time.Second, "the removed export to leave the importer's catalog", func() bool {
		return len(i.catalog.Load().services["a"]) == 0
	})
	if c := open(); c != nil {
		c.Close()
		t.Error("a new connection got through a removed export")
	}
	if err := roundTrip(held, "still open after the export was removed"); err != nil {
		t.Errorf("a connection through the removed export broke: %v", err)
	}
	held.(*net.TCPConn).CloseWrite()
	held.SetDeadline(time.Now().Add(5 * time.Second))
	if rest, err := io.ReadAll(held); err != nil || len(rest) != 0 {
		t.Errorf("the connection through the removed export did not finish cleanly: %q %v", rest, err)
	}
	testutil.Until(t, 5*time.Second, "the removed export's stream to end", func() bool {
		for _, x := range e.retiredX {
			if x.active.Load() != 0 {
				return false
			}
		}
		return true
	})
}
