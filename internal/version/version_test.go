package version

import "testing"

func TestString(t *testing.T) {
	for _, tc := range []struct {
		in          Info
		long, short string
	}{
		{Info{Version: "dev"}, "dev", "dev"},
		{Info{Version: "v1.0.0", Commit: "0123456789abcdef0123", Date: "2026-12-01T08:00:00Z"},
			"v1.0.0 (commit 0123456789ab, 2026-12-01T08:00:00Z)", "v1.0.0+0123456789ab"},
		{Info{Version: "dev", Commit: "abc", Modified: true}, "dev (commit abc, modified)", "dev+abc"},
	} {
		if got := tc.in.String(); got != tc.long {
			t.Errorf("%+v.String() = %q, want %q", tc.in, got, tc.long)
		}
		if got := tc.in.Short(); got != tc.short {
			t.Errorf("%+v.Short() = %q, want %q", tc.in, got, tc.short)
		}
	}
}

func TestGet(t *testing.T) {
	in := Get()
	if in.Version == "" || in.Go == "" {
		t.Fatalf("Get() = %+v: version and Go must be set", in)
	}
}

func TestLineTextFlat(t *testing.T) {
	v := Info{Version: "dev", Go: "go1.26.8", Commit: "0123456789abcdef", Date: "2026-11-30T10:00:00Z", Modified: true,
		Deps: map[string]string{"golang.zx2c4.com/wireguard": "v0.0.1", "github.com/hashicorp/yamux": "v0.1.2"}}
	if got, want := v.Line(), "meshd dev (commit 0123456789ab, 2026-11-30T10:00:00Z, modified) go1.26.8"; got != want {
		t.Errorf("Line = %q; want %q", got, want)
	}
	if got, want := v.Text(), v.Line()+"\nwireguard-go v0.0.1\nmemberlist unknown\nyamux v0.1.2\n"; got != want {
		t.Errorf("Text = %q; want %q", got, want)
	}
	f := v.Flat()
	if len(f) != 8 || f["meshd"] != "dev" || f["go"] != "go1.26.8" || f["commit"] != v.Commit || f["date"] != v.Date ||
		f["modified"] != "true" || f["wireguard-go"] != "v0.0.1" || f["memberlist"] != "unknown" || f["yamux"] != "v0.1.2" {
		t.Errorf("Flat = %v", f)
	}
	v.Commit, v.Date, v.Modified = "", "", false
	if got, want := v.Line(), "meshd dev go1.26.8"; got != want {
		t.Errorf("Line without VCS = %q; want %q", got, want)
	}
}
