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
