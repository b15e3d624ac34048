package policy_test

import (
	"testing"
	"time"

	"github.com/toolgate/toolgate/policy"
	"github.com/toolgate/toolgate/policy/limitertest"
)

// TestMemoryLimiterTable runs the table every limiter passes (the shared
// one in Redis runs it too).
func TestMemoryLimiterTable(t *testing.T) {
	limitertest.Run(t, limitertest.Config{
		New: func(t *testing.T, now func() time.Time) policy.Limiter {
			l := policy.NewMemoryLimiter(&policy.MemoryLimiterOptions{Now: now, IdleTTL: -1})
			t.Cleanup(l.Close)
			return l
		},
	})
}
