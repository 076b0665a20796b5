package node

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/meshd/meshd/internal/config"
	"github.com/meshd/meshd/internal/key"
)

// CheckConfig checks what `meshd config check` checks beyond parsing: the
// files cfg names, without starting or creating anything. The node key in
// data_dir must be readable, valid and 0600 if it exists (else the first
// start creates it); data_dir, if it exists, must be a directory.
func CheckConfig(cfg *config.Config) error {
	if fi, err := os.Stat(cfg.DataDir); err == nil && !fi.IsDir() {
		return fmt.Errorf("%s: data_dir: %s is not a directory", cfg.Path, cfg.DataDir)
	}
	path := filepath.Join(cfg.DataDir, key.FileName)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if _, err := key.LoadOrCreate(cfg.DataDir); err != nil {
		return fmt.Errorf("%s: data_dir: %w", cfg.Path, err)
	}
	return nil
}
