package callerr_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/toolgate/toolgate/callerr"
)

func TestRetryAfterMs(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want int64
	}{
		{0, 0},
		{-time.Second, 0},
		{time.Nanosecond, 1},
		{997658 * time.Microsecond, 998},
		{1500 * time.Millisecond, 1500},
	} {
		e := &callerr.Error{RetryAfter: tc.d}
		if got := e.RetryAfterMs(); got != tc.want {
			t.Errorf("RetryAfterMs of %v = %d, want %d", tc.d, got, tc.want)
		}
	}
}

func TestJSON(t *testing.T) {
	for _, tc := range []struct {
		e    *callerr.Error
		want string
	}{
		{&callerr.Error{Code: callerr.NotFound, Message: "gone"}, `{"code":"not_found","message":"gone"}`},
		{&callerr.Error{Code: callerr.RateLimited, Message: "<slow down>", RetryAfter: time.Second}, `{"code":"rate_limited","message":"\u003cslow down\u003e","retryAfterMs":1000}`},
	} {
		b, err := json.Marshal(tc.e)
		if err != nil || string(b) != tc.want {
			t.Errorf("JSON = %s, %v; want %s", b, err, tc.want)
		}
	}
}

func Example() {
	err := fmt.Errorf("calling the tool: %w", &callerr.Error{Code: callerr.RateLimited, Message: "rate limit exceeded", RetryAfter: 250 * time.Millisecond})
	var ce *callerr.Error
	if errors.As(err, &ce) && ce.Code == callerr.RateLimited {
		fmt.Printf("%s, retry in %d ms\n", ce.Message, ce.RetryAfterMs())
	}
	// Output: rate limit exceeded, retry in 250 ms
}
