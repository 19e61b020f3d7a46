package playground

import (
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"
)

// tabFiles are the documents the playground opens with, one tab each in
// the order of their names; NAME.json beside NAME.graphql holds its
// variables. A test validates every document against the schema.
//
//go:embed tabs
var tabFiles embed.FS

// Tab is one of GraphiQL's opening tabs (its defaultTabs prop).
type Tab struct {
	Query     string `json:"query"`
	Variables string `json:"variables,omitempty"`
}

// Tabs are the documents the playground opens with.
func Tabs() ([]Tab, error) {
	names, err := fs.Glob(tabFiles, "tabs/*.graphql")
	if err != nil {
		return nil, fmt.Errorf("playground: listing tabs: %w", err)
	}
	sort.Strings(names)
	tabs := make([]Tab, 0, len(names))
	for _, name := range names {
		query, err := tabFiles.ReadFile(name)
		if err != nil {
			return nil, fmt.Errorf("playground: reading %s: %w", name, err)
		}
		tab := Tab{Query: string(query)}
		vars, err := tabFiles.ReadFile(strings.TrimSuffix(name, path.Ext(name)) + ".json")
		if err == nil {
			if !json.Valid(vars) {
				return nil, fmt.Errorf("playground: the variables of %s are not JSON", name)
			}
			tab.Variables = string(vars)
		}
		tabs = append(tabs, tab)
	}
	return tabs, nil
}
