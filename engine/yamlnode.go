package engine

import (
	"bytes"
	"errors"
	"io"

	"go.yaml.in/yaml/v3"
)

// decodeAll parses every document of a YAML stream ("---" separated), as
// operators expect of a file that holds several: none is dropped.
func decodeAll(src []byte) ([]*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(src))
	var docs []*yaml.Node
	for {
		d := &yaml.Node{}
		err := dec.Decode(d)
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return docs, err
		}
		docs = append(docs, d)
	}
}

// maxAliasDepth bounds alias and merge chains, which YAML lets loop.
const maxAliasDepth = 32

// resolve follows an alias (*name) to the node its anchor (&name) marks.
func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && n.Alias != nil && i < maxAliasDepth; i++ {
		n = n.Alias
	}
	return n
}

// pair is one key and its value (aliases resolved) of a mapping.
type pair struct{ k, v *yaml.Node }

// pairs returns the entries of mapping n in order, with merge keys
// (`<<: *base`, `<<: [*a, *b]`) expanded as YAML's merge type defines them:
// a key written in the mapping wins over a merged one, and of merged
// mappings the first given wins.
func pairs(n *yaml.Node) []pair {
	return mergedPairs(resolve(n), 0)
}

func mergedPairs(n *yaml.Node, depth int) []pair {
	if n == nil || n.Kind != yaml.MappingNode || depth > maxAliasDepth {
		return nil
	}
	var own, merged []pair
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], resolve(n.Content[i+1])
		if k.Kind == yaml.ScalarNode && k.Tag == "!!merge" {
			srcs := []*yaml.Node{v}
			if v.Kind == yaml.SequenceNode {
				srcs = v.Content
			}
			for _, m := range srcs {
				merged = append(merged, mergedPairs(resolve(m), depth+1)...)
			}
			continue
		}
		own = append(own, pair{k, v})
	}
	if merged == nil {
		return own
	}
	seen := map[string]bool{}
	out := make([]pair, 0, len(own)+len(merged))
	for _, p := range own {
		seen[p.k.Value] = true
		out = append(out, p)
	}
	for _, p := range merged {
		if !seen[p.k.Value] {
			seen[p.k.Value] = true
			out = append(out, p)
		}
	}
	return out
}
