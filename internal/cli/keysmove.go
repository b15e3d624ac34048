package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/toolgate/toolgate/policy/apikey"
)

// keysExportVersion is the version of the export format.
const keysExportVersion = 1

// keysExport is what `keys export` writes and `keys import` reads.
type keysExport struct {
	Version int             `json:"version"`
	Keys    []keyExportJSON `json:"keys"`
}

// keyExportJSON is one key of an export: everything the store holds of
// it, the SHA-256 of its secret included (never the secret, which no
// store keeps).
type keyExportJSON struct {
	ID           string    `json:"id"`
	Project      string    `json:"project"`
	Name         string    `json:"name"`
	SecretSHA256 string    `json:"secretSha256"`
	Created      time.Time `json:"created"`
	Expires      time.Time `json:"expires,omitzero"`
	Revoked      time.Time `json:"revoked,omitzero"`
	LastUsed     time.Time `json:"lastUsed,omitzero"`
	Calls        int64     `json:"calls,omitempty"`
	RotatedTo    string    `json:"rotatedTo,omitempty"`
	// TTL is the lifetime a rotation hands on, as a Go duration ("720h0m0s").
	TTL string `json:"ttl,omitempty"`
}

func newKeysExport(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "export > keys.json",
		Short: "Write every stored key (hashes, not secrets) as JSON, for keys import",
		Long: `Write every key of the key store as JSON on standard output: ids,
projects, names, times, usage and the SHA-256 of each secret (the
secrets themselves are kept nowhere). "toolgate keys import" reads it
into another store: this moves an installation's keys from its SQLite
file into the PostgreSQL database of a cluster (export with the old
configuration, import with the new one) without issuing new keys.

The file lets whoever holds it check guesses of secrets against the
hashes, which 256-bit secrets make hopeless, but keep it private all
the same and delete it once imported.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runKeysExport(cmd, g) },
	}
}

func runKeysExport(cmd *cobra.Command, g *globals) error {
	ctx := cmd.Context()
	env, err := g.keyEnv(cmd, false)
	if err != nil {
		return err
	}
	s, err := env.open(ctx, false)
	if err != nil {
		return err
	}
	out := keysExport{Version: keysExportVersion, Keys: []keyExportJSON{}}
	if s != nil {
		defer s.Close()
		recs, err := s.Export(ctx)
		if err != nil {
			return err
		}
		for _, r := range recs {
			k := keyExportJSON{
				ID: r.ID, Project: r.Project, Name: r.Name, SecretSHA256: r.SecretSHA256,
				Created: r.Created, Expires: r.Expires, Revoked: r.Revoked, LastUsed: r.LastUsed,
				Calls: r.Calls, RotatedTo: r.RotatedTo,
			}
			if r.TTL > 0 {
				k.TTL = r.TTL.String()
			}
			out.Keys = append(out.Keys, k)
		}
	}
	if err := writeJSON(g.stdout, out); err != nil {
		return err
	}
	fmt.Fprintf(g.stderr, "Exported %d keys from %s.\n", len(out.Keys), env.path)
	return nil
}

func newKeysImport(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "import < keys.json",
		Short: "Add the keys of a keys export to the key store",
		Long: `Read what "toolgate keys export" wrote from standard input and add its keys
to the key store as they are: the same ids and secrets (clients keep
their keys), times and usage. Keys the store already holds are skipped,
so importing twice adds nothing. Imported keys are not audited as
created again: their key.created events are in the log of the
installation they come from.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runKeysImport(cmd, g) },
	}
}

func runKeysImport(cmd *cobra.Command, g *globals) error {
	ctx := cmd.Context()
	var in keysExport
	dec := json.NewDecoder(io.LimitReader(g.stdin, 256<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		return fmt.Errorf("reading the keys export: %w", err)
	}
	if in.Version != keysExportVersion {
		return fmt.Errorf("reading the keys export: version %d, want %d", in.Version, keysExportVersion)
	}
	recs := make([]apikey.Record, 0, len(in.Keys))
	for _, k := range in.Keys {
		var ttl time.Duration
		if k.TTL != "" {
			var err error
			if ttl, err = time.ParseDuration(k.TTL); err != nil {
				return fmt.Errorf("reading the keys export: key %s: ttl: %w", k.ID, err)
			}
		}
		recs = append(recs, apikey.Record{
			Key: apikey.Key{ID: k.ID, Project: k.Project, Name: k.Name, Created: k.Created, Expires: k.Expires,
				Revoked: k.Revoked, LastUsed: k.LastUsed, Calls: k.Calls, RotatedTo: k.RotatedTo, Source: apikey.SourceStore},
			SecretSHA256: k.SecretSHA256,
			TTL:          ttl,
		})
	}
	env, err := g.keyEnv(cmd, true)
	if err != nil {
		return err
	}
	s, err := env.open(ctx, true)
	if err != nil {
		return err
	}
	defer s.Close()
	n, err := s.Import(ctx, recs)
	if err != nil {
		return err
	}
	fmt.Fprintf(g.stdout, "Imported %d keys into %s (%d already there).\n", n, env.path, len(recs)-n)
	return nil
}
