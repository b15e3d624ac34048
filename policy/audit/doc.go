// Package audit owns toolgate's audit trail: the event types and the
// [Event] record with the size cap of each of its fields, the
// append-only, hash-chained JSON Lines log that writes them ([Log]: fsync
// modes, rotation and retention, failing closed), and its readers
// ([Read], [Verify], [RecordedKeyChanges]).
//
// It sits under policy/ with the other packages that decide on and
// record access (policy, policy/apikey, policy/alert), and is the lowest
// of them: they may import it for its event types, and it imports none of
// them. It only stores and reads files: it must not know about MCP,
// transports or sessions, nor what the gateway does with an event; the
// gateway builds the events and decides what a failed write means.
package audit
