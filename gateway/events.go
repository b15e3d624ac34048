package gateway

// event is one thing the gateway records about itself.
type event struct {
	Type        string
	Project     string
	Server      string
	Tool        string
	OldHash     string
	NewHash     string
	Quarantined bool
}

// emit records an event.
func (g *Gateway) emit(ev *event) {
	g.log.Info("event", "type", ev.Type, "project", ev.Project, "server", ev.Server, "tool", ev.Tool)
}
