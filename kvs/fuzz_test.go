package kvs

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"strconv"
	"testing"
	"time"
)

// readReply reads one well-formed RESP reply, or fails.
func readReply(rd *bufio.Reader) error {
	line, err := rd.ReadString('\n')
	if err != nil {
		return err
	}
	if len(line) < 3 || line[len(line)-2] != '\r' {
		return errors.New("reply line without CRLF: " + strconv.Quote(line))
	}
	body := line[1 : len(line)-2]
	switch line[0] {
	case '+', '-':
		return nil
	case ':':
		_, err := strconv.ParseInt(body, 10, 64)
		return err
	case '$':
		n, err := strconv.Atoi(body)
		if err != nil || n < -1 {
			return errors.New("bad bulk length")
		}
		if n >= 0 {
			b := make([]byte, n+2)
			if _, err := io.ReadFull(rd, b); err != nil {
				return err
			}
			if b[n] != '\r' || b[n+1] != '\n' {
				return errors.New("bulk without CRLF")
			}
		}
		return nil
	case '*':
		n, err := strconv.Atoi(body)
		if err != nil {
			return err
		}
		for i := 0; i < n; i++ {
			if err := readReply(rd); err != nil {
				return err
			}
		}
		return nil
	}
	return errors.New("unknown reply type " + strconv.Quote(line))
}

// FuzzRESP feeds arbitrary bytes to the parser (invariants: progress, no
// panic, incremental parsing agrees with whole-buffer parsing) and to a live
// single-node store (every reply is well-formed RESP and the server keeps
// serving new connections).
func FuzzRESP(f *testing.F) {
	for _, s := range []string{
		"PING\r\n",
		"*1\r\n$4\r\nPING\r\n",
		"*3\r\n$3\r\nSET\r\n$1\r\na\r\n$1\r\nb\r\n*2\r\n$3\r\nGET\r\n$1\r\na\r\n",
		"*2\r\n$3\r\nDEL\r\n$1\r\na\r\n",
		"*5\r\n$4\r\nMSET\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\na\r\n$1\r\n2\r\n*3\r\n$4\r\nMGET\r\n$1\r\na\r\n$1\r\nb\r\n",
		"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n*3\r\n$6\r\nCLIENT\r\n$7\r\nSETINFO\r\n$1\r\nx\r\n",
		"*3\r\n$6\r\nCONFIG\r\n$3\r\nGET\r\n$4\r\nsave\r\n",
		"*1\r\n$4\r\nINFO\r\n",
		"*2\r\n$3\r\nGET\r\n$99999999\r\n",
		"*-1\r\n*0\r\n",
		"*2\r\n$x\r\n",
		"$3\r\nfoo\r\n",
		"*1\r\n$3\r\nfo",
		"SET a \"b c\"\r\nGET a\r\n",
		"\r\n\r\n",
		"*999999999999999999999\r\n",
		"*2\r\n$3\r\nGET\r\n$-5\r\n",
	} {
		f.Add([]byte(s))
	}
	ports := freePorts(f, 2)
	fuzzNode, err := Start(Config{ID: 1, InMemory: true, Timeout: time.Second,
		Listen: "127.0.0.1:" + strconv.Itoa(ports[0]), PeerListen: "127.0.0.1:" + strconv.Itoa(ports[1])})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { fuzzNode.Close() })
	f.Fuzz(func(t *testing.T, data []byte) {
		// Parser invariants.
		whole := parseAll(data, len(data))
		chunked := parseAll(data, 3)
		if whole != chunked {
			t.Fatalf("whole-buffer and chunked parsing differ:\n%s\n%s", whole, chunked)
		}
		c, err := net.Dial("tcp", fuzzNode.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		go func() {
			c.Write(data)
			c.(*net.TCPConn).CloseWrite()
		}()
		rd := bufio.NewReader(c)
		for {
			if _, err := rd.Peek(1); err != nil {
				break // EOF: the server closed after the input ended
			}
			if err := readReply(rd); err != nil {
				t.Fatalf("malformed reply: %v", err)
			}
		}
		c2, err := net.Dial("tcp", fuzzNode.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c2.Close()
		c2.SetDeadline(time.Now().Add(5 * time.Second))
		c2.Write([]byte("PING\r\n"))
		b := make([]byte, 7)
		if _, err := io.ReadFull(c2, b); err != nil || !bytes.Equal(b, []byte("+PONG\r\n")) {
			t.Fatalf("server unusable after fuzz input: %q %v", b, err)
		}
	})
}

// parseAll parses data fed in chunks of size n and returns a transcript.
func parseAll(data []byte, n int) string {
	p := newRESPParser(64, 1<<20)
	var out bytes.Buffer
	var buf []byte
	for off := 0; off < len(data) || n == 0; off += n {
		end := min(off+n, len(data))
		buf = append(buf, data[off:end]...)
		for {
			used, res := p.next(buf)
			if used < 0 || used > len(buf) {
				panic("parser consumed outside the buffer")
			}
			buf = buf[used:]
			switch res {
			case resNeedMore:
			case resCommand:
				out.WriteString("cmd")
				for _, a := range p.args {
					out.WriteString(" " + strconv.Quote(string(a)))
				}
				out.WriteByte('\n')
				continue
			case resTooBig:
				out.WriteString("toobig\n")
				continue
			case resSkip:
				if used == 0 {
					panic("skip without progress")
				}
				continue
			case resProto:
				out.WriteString("proto\n")
				return out.String()
			}
			break
		}
		if end == len(data) {
			break
		}
	}
	return out.String()
}
