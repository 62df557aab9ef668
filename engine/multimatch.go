package engine

// multiMatcher finds which of many patterns occur in a text, in one pass
// over the text (Aho-Corasick). Rule sets hold hundreds of `text contains
// "..."` keyword rules; checking each with strings.Contains scans the body
// once per rule, this scans it once per message.
//
// The automaton is a dense DFA over byte classes: bytes that appear in no
// pattern share class 0, so the table has one column per distinct pattern
// byte rather than 256.
type multiMatcher struct {
	classes  [256]uint8
	nclass   int
	next     []int32   // next[state*nclass+class]
	out      [][]int32 // patterns ending at each state, failure chain included
	empty    []int32   // empty patterns match every text
	npattern int
}

func newMultiMatcher(patterns []string) *multiMatcher {
	m := &multiMatcher{npattern: len(patterns)}
	// Byte classes.
	var used [256]bool
	for _, p := range patterns {
		for i := 0; i < len(p); i++ {
			used[p[i]] = true
		}
	}
	m.nclass = 1
	for b := range 256 {
		if used[b] {
			m.classes[b] = uint8(m.nclass)
			m.nclass++
		}
	}
	if m.nclass > 256 {
		// 255 distinct pattern bytes plus the "other" class cannot fit
		// in uint8; collapse: every byte its own class.
		m.nclass = 256
		for b := range 256 {
			m.classes[b] = uint8(b)
		}
	}
	// Trie.
	const none = -1
	goTo := [][]int32{make([]int32, m.nclass)}
	for i := range goTo[0] {
		goTo[0][i] = none
	}
	m.out = [][]int32{nil}
	for id, p := range patterns {
		if p == "" {
			m.empty = append(m.empty, int32(id))
			continue
		}
		s := int32(0)
		for i := 0; i < len(p); i++ {
			c := m.classes[p[i]]
			if goTo[s][c] == none {
				row := make([]int32, m.nclass)
				for j := range row {
					row[j] = none
				}
				goTo = append(goTo, row)
				m.out = append(m.out, nil)
				goTo[s][c] = int32(len(goTo) - 1)
			}
			s = goTo[s][c]
		}
		m.out[s] = append(m.out[s], int32(id))
	}
	// Failure links by breadth-first search, folded into a full DFA.
	fail := make([]int32, len(goTo))
	queue := make([]int32, 0, len(goTo))
	for c := range m.nclass {
		if t := goTo[0][c]; t == none {
			goTo[0][c] = 0
		} else {
			fail[t] = 0
			queue = append(queue, t)
		}
	}
	for len(queue) > 0 {
		s := queue[0]
		queue = queue[1:]
		m.out[s] = append(m.out[s], m.out[fail[s]]...)
		for c := range m.nclass {
			t := goTo[s][c]
			if t == none {
				goTo[s][c] = goTo[fail[s]][c]
				continue
			}
			fail[t] = goTo[fail[s]][c]
			queue = append(queue, t)
		}
	}
	m.next = make([]int32, len(goTo)*m.nclass)
	for s, row := range goTo {
		copy(m.next[s*m.nclass:], row)
	}
	return m
}

// match sets found[id] for every pattern id that occurs in text. found must
// have one entry per pattern.
func (m *multiMatcher) match(text string, found []bool) {
	for _, id := range m.empty {
		found[id] = true
	}
	s := int32(0)
	n := int32(m.nclass)
	for i := 0; i < len(text); i++ {
		s = m.next[s*n+int32(m.classes[text[i]])]
		for _, id := range m.out[s] {
			found[id] = true
		}
	}
}
