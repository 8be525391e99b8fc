// Package resp is the benchmarks' one RESP (Redis protocol) client: a
// reply reader, a command encoder and a minimal synchronous client. The
// reader bounds what it accepts (bulk strings, array lengths, nesting) and
// reports input that is not RESP as an error wrapping ErrProto.
package resp

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"
)

// Reply is one parsed RESP reply. Kind is the RESP type byte ('+', '-',
// ':', '$', '*'); Nil marks a null bulk string or array.
type Reply struct {
	Kind  byte
	Str   []byte  // simple string, error text or bulk contents
	Int   int64   // integer reply
	Elems []Reply // array elements
	Nil   bool
}

// IsOK reports whether r is the simple string "OK".
func (r Reply) IsOK() bool { return r.Kind == '+' && string(r.Str) == "OK" }

// ErrProto is returned for input that is not RESP.
var ErrProto = errors.New("resp: protocol error")

// Bounds of what the reader accepts.
const (
	maxBulk  = 16 << 20 // bytes in a bulk string
	maxElems = 1 << 20  // elements in an array
	maxDepth = 8        // arrays nested in arrays
)

// AppendCommand appends args as a RESP array of bulk strings to b.
func AppendCommand(b []byte, args ...[]byte) []byte {
	b = append(b, '*')
	b = strconv.AppendInt(b, int64(len(args)), 10)
	b = append(b, '\r', '\n')
	for _, a := range args {
		b = append(b, '$')
		b = strconv.AppendInt(b, int64(len(a)), 10)
		b = append(b, '\r', '\n')
		b = append(b, a...)
		b = append(b, '\r', '\n')
	}
	return b
}

// ReadReply reads one reply from r. Bulk contents are freshly allocated.
func ReadReply(r *bufio.Reader) (Reply, error) { return readReply(r, 0) }

func readReply(r *bufio.Reader, depth int) (Reply, error) {
	line, err := readLine(r)
	if err != nil {
		return Reply{}, err
	}
	if len(line) == 0 {
		return Reply{}, fmt.Errorf("%w: empty line", ErrProto)
	}
	rep := Reply{Kind: line[0]}
	body := line[1:]
	switch rep.Kind {
	case '+', '-':
		rep.Str = append([]byte(nil), body...)
		return rep, nil
	case ':':
		rep.Int, err = strconv.ParseInt(string(body), 10, 64)
		if err != nil {
			return Reply{}, fmt.Errorf("%w: integer %q", ErrProto, body)
		}
		return rep, nil
	case '$':
		n, err := strconv.ParseInt(string(body), 10, 64)
		if err != nil || n < -1 || n > maxBulk {
			return Reply{}, fmt.Errorf("%w: bulk length %q", ErrProto, body)
		}
		if n == -1 {
			rep.Nil = true
			return rep, nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return Reply{}, err
		}
		if buf[n] != '\r' || buf[n+1] != '\n' {
			return Reply{}, fmt.Errorf("%w: bulk not terminated by CRLF", ErrProto)
		}
		rep.Str = buf[:n]
		return rep, nil
	case '*':
		n, err := strconv.ParseInt(string(body), 10, 64)
		if err != nil || n < -1 || n > maxElems {
			return Reply{}, fmt.Errorf("%w: array length %q", ErrProto, body)
		}
		if n == -1 {
			rep.Nil = true
			return rep, nil
		}
		if depth >= maxDepth && n > 0 {
			return Reply{}, fmt.Errorf("%w: arrays nested deeper than %d", ErrProto, maxDepth)
		}
		rep.Elems = make([]Reply, n)
		for i := range rep.Elems {
			if rep.Elems[i], err = readReply(r, depth+1); err != nil {
				return Reply{}, err
			}
		}
		return rep, nil
	}
	return Reply{}, fmt.Errorf("%w: unknown reply type %q", ErrProto, rep.Kind)
}

// readLine reads one CRLF-terminated line without the CRLF. The slice is
// valid until the next read from r.
func readLine(r *bufio.Reader) ([]byte, error) {
	line, err := r.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, fmt.Errorf("%w: line too long", ErrProto)
		}
		return nil, err
	}
	if len(line) < 2 || line[len(line)-2] != '\r' {
		return nil, fmt.Errorf("%w: line not terminated by CRLF", ErrProto)
	}
	return line[:len(line)-2], nil
}

// Client is a minimal synchronous RESP client over one connection. It is
// not safe for concurrent use.
type Client struct {
	conn net.Conn
	br   *bufio.Reader
	buf  []byte
}

// NewClient wraps conn; the Client owns it from now on.
func NewClient(conn net.Conn) *Client {
	return &Client{conn: conn, br: bufio.NewReaderSize(conn, 64<<10)}
}

// Do sends one command and reads its reply. ctx bounds the round trip (its
// deadline becomes the connection's).
func (c *Client) Do(ctx context.Context, args ...[]byte) (Reply, error) {
	if d, ok := ctx.Deadline(); ok {
		c.conn.SetDeadline(d)
	} else {
		c.conn.SetDeadline(time.Time{})
	}
	stop := context.AfterFunc(ctx, func() { c.conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	c.buf = AppendCommand(c.buf[:0], args...)
	if _, err := c.conn.Write(c.buf); err != nil {
		return Reply{}, err
	}
	return ReadReply(c.br)
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }
