package bench

import (
	"math"
	"slices"
	"time"
)

// Summary describes a distribution of durations, in milliseconds.
// Percentiles are nearest-rank: p50 of 1..4 is 2.
type Summary struct {
	N    int     `json:"n"`
	Min  float64 `json:"min"`
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

// Summarize describes durations (it sorts them in place).
func Summarize(d []time.Duration) Summary {
	ms := make([]float64, len(d))
	for i, v := range d {
		ms[i] = float64(v) / float64(time.Millisecond)
	}
	return SummarizeFloats(ms)
}

// SummarizeFloats describes values (it sorts them in place).
func SummarizeFloats(v []float64) Summary {
	if len(v) == 0 {
		return Summary{}
	}
	slices.Sort(v)
	var sum float64
	for _, x := range v {
		sum += x
	}
	return Summary{
		N:    len(v),
		Min:  v[0],
		P50:  percentile(v, 0.50),
		P90:  percentile(v, 0.90),
		P99:  percentile(v, 0.99),
		Max:  v[len(v)-1],
		Mean: sum / float64(len(v)),
	}
}

// percentile returns the nearest-rank p-quantile (0 < p <= 1) of sorted.
func percentile(sorted []float64, p float64) float64 {
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}
