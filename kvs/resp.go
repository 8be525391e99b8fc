package kvs

import (
	"bytes"
	"fmt"
)

// respParser parses client commands (RESP arrays of bulk strings, or inline
// commands) from a byte buffer without allocating: the arguments it returns
// alias the buffer. An argument longer than maxArg rejects its command: the
// parser reports resTooBig once, then skips the rest of that command as its
// bytes arrive, so the connection stays usable. Garbage that is not RESP is a
// protocol error (the connection should answer it and close, as Redis does).
//
// Not safe for concurrent use.
type respParser struct {
	maxArg    int
	maxArgs   int
	maxInline int
	skipBytes int // bytes of a rejected bulk still to drop
	skipArgs  int // bulks of a rejected command still to drop
	args      [][]byte
	err       string // protocol error text after resProto

	// A multibulk command in progress (count > 0): its argument count, the
	// offset of the next argument's header and the arguments parsed so far,
	// all relative to the command's first byte.
	count int
	pos   int
	offs  [][2]int

	headers int // length lines parsed (tests: parsing work stays linear)
}

type parseResult uint8

const (
	resNeedMore parseResult = iota // incomplete: read more, call again with the same bytes (and more after them)
	resCommand                     // args holds one command
	resSkip                        // bytes consumed, nothing to answer
	resTooBig                      // a command was rejected for an oversized argument
	resProto                       // protocol error; err says why
)

// newRESPParser returns a parser that refuses arguments over maxArg bytes
// (the command is skipped) and commands of more than maxArgs arguments (a
// protocol error decided on the multibulk header alone, before any
// argument is read: such a command could only be refused later anyway).
func newRESPParser(maxArg, maxArgs int) *respParser {
	return &respParser{maxArg: maxArg, maxArgs: maxArgs, maxInline: 64 << 10}
}

// parseLen parses a non-negative decimal; ok=false on anything else.
func parseLen(b []byte) (int, bool) {
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

// header parses "<prefix><len>\r\n" at the start of b. n=0 means incomplete.
func (p *respParser) header(b []byte, prefix byte) (size, n int, res parseResult) {
	p.headers++
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		if len(b) > 24 {
			p.err = "invalid length line"
			return 0, 0, resProto
		}
		return 0, 0, resNeedMore
	}
	if b[0] != prefix {
		p.err = "expected '" + string(prefix) + "'"
		return 0, 0, resProto
	}
	if i < 2 || b[i-1] != '\r' {
		p.err = "invalid length line"
		return 0, 0, resProto
	}
	line := b[1 : i-1]
	if prefix == '*' && len(line) > 0 && line[0] == '-' {
		return -1, i + 1, resCommand // *-1: null array, ignored
	}
	size, ok := parseLen(line)
	if !ok {
		if prefix == '*' {
			p.err = "invalid multibulk length"
		} else {
			p.err = "invalid bulk length"
		}
		return 0, 0, resProto
	}
	return size, i + 1, resCommand
}

// next parses from b. It returns how many bytes of b were consumed and what
// they held. On resCommand, p.args holds the command until the next call.
func (p *respParser) next(b []byte) (int, parseResult) {
	if p.skipBytes > 0 {
		if len(b) == 0 {
			return 0, resNeedMore
		}
		n := min(p.skipBytes, len(b))
		p.skipBytes -= n
		return n, resSkip
	}
	if p.skipArgs > 0 {
		size, n, res := p.header(b, '$')
		if res != resCommand {
			return 0, res
		}
		p.skipArgs--
		p.skipBytes = size + 2
		return n, resSkip
	}
	if len(b) == 0 {
		return 0, resNeedMore
	}
	if p.count == 0 {
		if b[0] != '*' {
			return p.inline(b)
		}
		count, pos, res := p.header(b, '*')
		if res != resCommand {
			return 0, res
		}
		if count <= 0 {
			return pos, resSkip
		}
		if count > p.maxArgs {
			p.err = fmt.Sprintf("too many arguments in one command (%d, max %d)", count, p.maxArgs)
			return 0, resProto
		}
		p.count, p.pos = count, pos
		p.offs = p.offs[:0]
	}
	// Resume where the last call stopped: the arguments parsed so far are
	// kept as offsets from the command's first byte (b[0]), so a command
	// that arrives in many reads is parsed once, not once per read.
	pos := p.pos
	for len(p.offs) < p.count {
		size, m, res := p.header(b[pos:], '$')
		if res == resNeedMore {
			p.pos = pos
			return 0, res
		}
		if res != resCommand {
			p.count = 0
			return 0, res
		}
		if size > p.maxArg {
			p.skipBytes = size + 2
			p.skipArgs = p.count - len(p.offs) - 1
			p.count = 0
			return pos + m, resTooBig
		}
		end := pos + m + size
		if end+2 > len(b) {
			p.pos = pos
			return 0, resNeedMore
		}
		if b[end] != '\r' || b[end+1] != '\n' {
			p.err = "invalid bulk length"
			p.count = 0
			return 0, resProto
		}
		p.offs = append(p.offs, [2]int{pos + m, end})
		pos = end + 2
	}
	p.args = p.args[:0]
	for _, o := range p.offs {
		p.args = append(p.args, b[o[0]:o[1]])
	}
	p.count = 0
	if cap(p.offs) > 4096 {
		p.offs = nil
	}
	return pos, resCommand
}

func (p *respParser) inline(b []byte) (int, parseResult) {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		if len(b) > p.maxInline {
			p.err = "too big inline request"
			return 0, resProto
		}
		return 0, resNeedMore
	}
	line := b[:i]
	if len(line) > 0 && line[len(line)-1] == '\r' {
		line = line[:len(line)-1]
	}
	p.args = p.args[:0]
	for len(line) > 0 {
		j := 0
		for j < len(line) && (line[j] == ' ' || line[j] == '\t') {
			j++
		}
		line = line[j:]
		k := 0
		for k < len(line) && line[k] != ' ' && line[k] != '\t' {
			k++
		}
		if k > 0 {
			if k > p.maxArg {
				return i + 1, resTooBig
			}
			p.args = append(p.args, line[:k])
		}
		line = line[k:]
	}
	if len(p.args) == 0 {
		return i + 1, resSkip
	}
	return i + 1, resCommand
}

// appendErr appends a RESP error "-<msg>\r\n", replacing bytes that would
// break the line.
func appendErr(b []byte, msg string) []byte {
	b = append(b, '-')
	for i := 0; i < len(msg); i++ {
		c := msg[i]
		if c < ' ' || c > '~' {
			c = '?'
		}
		b = append(b, c)
	}
	return append(b, '\r', '\n')
}

// appendSafe appends up to 64 bytes of arg with unprintable bytes replaced,
// for echoing client input inside error messages.
func appendSafe(b, arg []byte) []byte {
	if len(arg) > 64 {
		arg = arg[:64]
	}
	for _, c := range arg {
		if c < ' ' || c > '~' {
			c = '?'
		}
		b = append(b, c)
	}
	return b
}
