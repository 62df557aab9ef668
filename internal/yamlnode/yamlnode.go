// Package yamlnode reads YAML as operators write it, for rule files and
// fixtures alike: every document of a stream, aliases and merge keys.
package yamlnode

import (
	"bytes"
	"errors"
	"io"

	"go.yaml.in/yaml/v3"
)

// DecodeAll parses every document of a YAML stream ("---" separated): none
// is dropped.
func DecodeAll(src []byte) ([]*yaml.Node, error) {
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

// MaxDepth bounds alias and merge chains and nesting, which YAML lets loop.
const MaxDepth = 32

// Resolve follows an alias (*name) to the node its anchor (&name) marks.
func Resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && n.Alias != nil && i < MaxDepth; i++ {
		n = n.Alias
	}
	return n
}

// Pair is one key and its value (aliases resolved) of a mapping.
type Pair struct{ K, V *yaml.Node }

// Pairs returns the entries of mapping n in order, with merge keys
// (`<<: *base`, `<<: [*a, *b]`) expanded as YAML's merge type defines them:
// a key written in the mapping wins over a merged one, and of merged
// mappings the first given wins.
func Pairs(n *yaml.Node) []Pair {
	return pairs(Resolve(n), 0)
}

func pairs(n *yaml.Node, depth int) []Pair {
	if n == nil || n.Kind != yaml.MappingNode || depth > MaxDepth {
		return nil
	}
	var own, merged []Pair
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], Resolve(n.Content[i+1])
		if k.Kind == yaml.ScalarNode && k.Tag == "!!merge" {
			srcs := []*yaml.Node{v}
			if v.Kind == yaml.SequenceNode {
				srcs = v.Content
			}
			for _, m := range srcs {
				merged = append(merged, pairs(Resolve(m), depth+1)...)
			}
			continue
		}
		own = append(own, Pair{k, v})
	}
	if merged == nil {
		return own
	}
	seen := map[string]bool{}
	out := make([]Pair, 0, len(own)+len(merged))
	for _, p := range own {
		seen[p.K.Value] = true
		out = append(out, p)
	}
	for _, p := range merged {
		if !seen[p.K.Value] {
			seen[p.K.Value] = true
			out = append(out, p)
		}
	}
	return out
}
