package gateway

import (
	"crypto/tls"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/toolgate/toolgate/internal/config"
)

// certCheckInterval is how often a handshake may look at the certificate
// files for a change.
const certCheckInterval = time.Second

// TLSConfig returns the server TLS configuration for c: TLS 1.2 at least
// (1.3 preferred by Go's defaults), with the certificate read again from
// disk when its files change, so a renewed certificate takes effect
// without a restart.
func TLSConfig(c config.TLS) (*tls.Config, error) {
	r := &certReloader{certFile: c.CertFile, keyFile: c.KeyFile}
	if err := r.load(); err != nil {
		return nil, err
	}
	min := uint16(tls.VersionTLS12)
	if c.MinVersion == "1.3" {
		min = tls.VersionTLS13
	}
	return &tls.Config{MinVersion: min, GetCertificate: r.get}, nil
}

// certReloader serves a certificate and reloads it when the files' modification
// times change. A pair that fails to load keeps the previous one.
type certReloader struct {
	certFile, keyFile string

	mu       sync.Mutex
	cert     *tls.Certificate
	modTimes [2]time.Time
	checked  time.Time
}

func (r *certReloader) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.checked) >= certCheckInterval {
		r.checked = time.Now()
		if mt, err := r.mtimes(); err == nil && mt != r.modTimes {
			_ = r.loadLocked()
		}
	}
	return r.cert, nil
}

func (r *certReloader) mtimes() ([2]time.Time, error) {
	var mt [2]time.Time
	for i, f := range []string{r.certFile, r.keyFile} {
		st, err := os.Stat(f)
		if err != nil {
			return mt, err
		}
		mt[i] = st.ModTime()
	}
	return mt, nil
}

func (r *certReloader) load() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.loadLocked()
}

func (r *certReloader) loadLocked() error {
	mt, err := r.mtimes()
	if err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("tls: loading %s and %s: %w", r.certFile, r.keyFile, err)
	}
	r.cert, r.modTimes = &cert, mt
	return nil
}
