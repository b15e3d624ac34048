package benchmarks

import (
	"testing"
	"time"
)

func TestSummarize(t *testing.T) {
	ms := func(n ...int) []time.Duration {
		var d []time.Duration
		for _, v := range n {
			d = append(d, time.Duration(v)*time.Millisecond)
		}
		return d
	}
	tests := []struct {
		name    string
		lat     []time.Duration
		elapsed time.Duration
		want    summary
	}{
		{"no calls", nil, time.Second, summary{}},
		{"one call", ms(7), 7 * time.Millisecond, summary{p50: 7 * time.Millisecond, p99: 7 * time.Millisecond, callsPerSec: 1000.0 / 7}},
		{"unsorted", ms(5, 1, 4, 2, 3), time.Second, summary{p50: 3 * time.Millisecond, p99: 5 * time.Millisecond, callsPerSec: 5}},
		{"even count takes the lower middle", ms(1, 2, 3, 4), 2 * time.Second, summary{p50: 2 * time.Millisecond, p99: 4 * time.Millisecond, callsPerSec: 2}},
		{"p99 of 200 is the 198th", append(ms(make([]int, 197)...), ms(10, 20, 30)...), time.Second,
			summary{p50: 0, p99: 10 * time.Millisecond, callsPerSec: 200}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := summarize(tt.lat, tt.elapsed); got != tt.want {
				t.Errorf("summarize = %+v, want %+v", got, tt.want)
			}
		})
	}
}
