// Package webhook delivers alerts over HTTP: it is the alert.Poster
// the gateway uses, kept out of package policy/alert, which does no networking.
package webhook

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"

	"github.com/toolgate/toolgate/policy/alert"
)

// Poster returns an alert.Poster that POSTs the alert as JSON with
// client. A 2xx answer is delivered; 429 and 5xx answers and network
// errors are retried by the alerter; any other answer wraps
// alert.ErrRejected, which stops the retries.
func Poster(client *http.Client) alert.Poster {
	return func(ctx context.Context, url string, body []byte) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			return fmt.Errorf("%w: %v", alert.ErrRejected, err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("User-Agent", "toolgate")
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		switch {
		case resp.StatusCode >= 200 && resp.StatusCode < 300:
			return nil
		case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
			return fmt.Errorf("webhook answered %s", resp.Status)
		default:
			return fmt.Errorf("%w: webhook answered %s", alert.ErrRejected, resp.Status)
		}
	}
}
