// Package alert owns toolgate's alert rules: counting audit events per
// project in sliding windows ([Rule], [Alerter]), and delivering the
// [Alert] a rule fires, with retries, through the [Poster] it is given.
//
// It sits under policy/ beside the audit log whose events it counts, and
// imports package policy/audit for their types. It must not know about
// MCP, transports or sessions, and does no networking of its own: the
// code that wires the gateway supplies the poster, and the gateway hands
// it each event as a type, a project and a few fields.
package alert
