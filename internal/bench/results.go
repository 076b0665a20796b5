// Package bench holds the measurement code of `meshd bench`: throughput,
// request/response latency, connection rate and idle connections against
// plain TCP addresses (an import's listener, or the target itself for the
// direct baseline), and the result formatting (one JSON object, or
// key=value lines). It knows nothing about meshd processes: internal/lab
// starts those and internal/benchrun hands their addresses in.
package bench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"time"
)

// Results is an ordered set of flat key/value results. Values are
// float64, int64, string, bool or nil (written as null).
type Results struct {
	keys []string
	vals map[string]any
}

// NewResults returns an empty result set.
func NewResults() *Results { return &Results{vals: make(map[string]any)} }

// Set records key=v; a key set twice keeps its first position.
func (r *Results) Set(key string, v any) {
	if _, ok := r.vals[key]; !ok {
		r.keys = append(r.keys, key)
	}
	switch x := v.(type) {
	case int:
		v = int64(x)
	case uint64:
		v = int64(x)
	case time.Duration:
		v = x.String()
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			v = nil
		}
	}
	r.vals[key] = v
}

// SetPair records a meshd figure, its direct baseline and their ratio
// (meshd/direct) as key, key_direct and key_ratio. For "_us"-suffixed
// latency keys the suffix stays last: latency_1_p50_us,
// latency_1_p50_direct_us, latency_1_p50_ratio.
func (r *Results) SetPair(key string, mesh, direct float64) {
	base, unit := key, ""
	for _, u := range []string{"_us", "_mbps"} {
		if len(key) > len(u) && key[len(key)-len(u):] == u {
			base, unit = key[:len(key)-len(u)], u
		}
	}
	r.Set(base+unit, Round(mesh, 3))
	r.Set(base+"_direct"+unit, Round(direct, 3))
	r.Set(base+"_ratio", Round(Ratio(mesh, direct), 4))
}

// Get returns the value of key and whether it is set.
func (r *Results) Get(key string) (any, bool) {
	v, ok := r.vals[key]
	return v, ok
}

// Keys returns the keys in insertion order.
func (r *Results) Keys() []string { return append([]string(nil), r.keys...) }

// MarshalJSON writes one object with the keys in insertion order.
func (r *Results) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, k := range r.keys {
		if i > 0 {
			b.WriteByte(',')
		}
		kb, _ := json.Marshal(k)
		b.Write(kb)
		b.WriteByte(':')
		vb, err := json.Marshal(r.vals[k])
		if err != nil {
			return nil, fmt.Errorf("bench: result %s: %w", k, err)
		}
		b.Write(vb)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// WriteJSON writes the results as one indented JSON object and a newline.
func (r *Results) WriteJSON(w io.Writer) error {
	raw, err := r.MarshalJSON()
	if err != nil {
		return err
	}
	var out bytes.Buffer
	if err := json.Indent(&out, raw, "", "  "); err != nil {
		return err
	}
	out.WriteByte('\n')
	_, err = w.Write(out.Bytes())
	return err
}

// WriteKV writes one key=value line per result. Strings containing
// spaces, quotes or '=' are quoted (Go syntax); nil is "null".
func (r *Results) WriteKV(w io.Writer) error {
	var b bytes.Buffer
	for _, k := range r.keys {
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(FormatValue(r.vals[k]))
		b.WriteByte('\n')
	}
	_, err := w.Write(b.Bytes())
	return err
}

// FormatValue formats one value for the key=value form.
func FormatValue(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case int64:
		return strconv.FormatInt(x, 10)
	case bool:
		return strconv.FormatBool(x)
	case string:
		needQuote := x == ""
		for _, c := range x {
			if c <= ' ' || c == '"' || c == '=' || c == '\\' || c > '~' {
				needQuote = true
				break
			}
		}
		if needQuote {
			return strconv.Quote(x)
		}
		return x
	default:
		return fmt.Sprint(x)
	}
}

// Ratio is mesh/direct, NaN when direct is zero (written as null).
func Ratio(mesh, direct float64) float64 {
	if direct == 0 {
		return math.NaN()
	}
	return mesh / direct
}

// Round rounds x to the given number of decimal places (NaN stays NaN).
func Round(x float64, places int) float64 {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return x
	}
	p := math.Pow(10, float64(places))
	return math.Round(x*p) / p
}

// Percentile returns the p-th percentile (0 < p <= 100, nearest rank) of
// sorted samples; 0 for no samples.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(n)))
	if rank < 1 {
		rank = 1
	}
	if rank > n {
		rank = n
	}
	return sorted[rank-1]
}

// Summary is a latency distribution.
type Summary struct {
	Count         int
	P50, P99, Max time.Duration
}

// Summarize sorts samples in place and summarises them.
func Summarize(samples []time.Duration) Summary {
	sort.Slice(samples, func(i, j int) bool { return samples[i] < samples[j] })
	s := Summary{Count: len(samples)}
	if len(samples) > 0 {
		s.P50 = Percentile(samples, 50)
		s.P99 = Percentile(samples, 99)
		s.Max = samples[len(samples)-1]
	}
	return s
}

// Micros is d in microseconds, to 0.1 µs.
func Micros(d time.Duration) float64 { return Round(float64(d)/float64(time.Microsecond), 1) }
