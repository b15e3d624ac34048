// Package apikey owns toolgate's API keys: their format (tg_<id>_<secret>,
// [Generate], [Parse]) and hashing ([Hash]), the stores that keep them
// with their usage and schema migrations ([Backend]: [Store] in a SQLite
// file, [PGStore] in PostgreSQL for gateways that run as several
// replicas), and the [Authenticator] that checks a presented key against
// the store and the keys listed in the configuration.
//
// It sits under policy/ beside the access rules it serves. Its store
// records each key change for the audit trail in the transaction that
// makes it ([Change]), so it imports package policy/audit for the event
// types, and nothing else of toolgate. It must not know about MCP,
// transports or sessions (a presented key reaches it as a string), nor
// write the audit log: the gateway records the changes it hands over.
package apikey
