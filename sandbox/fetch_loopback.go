//go:build toolgate_fetch_loopback

package sandbox

// A binary built with the toolgate_fetch_loopback tag lets fetch reach
// loopback addresses (127.0.0.0/8 and ::1, nothing else), so that
// end-to-end tests can serve fetch from a local HTTP server through a real
// `toolgate serve`. Release builds never carry the tag; an engine built
// with it says so in its log.
func init() { buildAllowsLoopback = true }
