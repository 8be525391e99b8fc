package orderwire

import (
	"errors"
	"io"
)

// Reader reads frames from a byte stream through a fixed buffer. A header is
// validated (type known, body length the type's) before its body is waited
// for, so a corrupt or hostile peer costs at most one buffer. ReadFrame does
// not allocate. A Reader is not safe for concurrent use.
type Reader struct {
	r    io.Reader
	buf  [4096]byte
	r0   int // start of unread bytes
	w    int // end of unread bytes
	done error
}

// NewReader returns a Reader reading from r.
func NewReader(r io.Reader) *Reader { return &Reader{r: r} }

// Buffered reports how many bytes have been read from the stream but not
// yet returned as frames.
func (rd *Reader) Buffered() int { return rd.w - rd.r0 }

// ReadFrame reads the next frame into f. It returns io.EOF at a clean end of
// stream, io.ErrUnexpectedEOF if the stream ends inside a frame, and one of
// the package's errors if the stream is corrupt; after an error the Reader
// keeps returning it.
func (rd *Reader) ReadFrame(f *Frame) error {
	if rd.done != nil {
		return rd.done
	}
	for {
		n, err := Decode(rd.buf[rd.r0:rd.w], f)
		if err == nil {
			rd.r0 += n
			return nil
		}
		if !errors.Is(err, ErrShort) {
			rd.done = err
			return err
		}
		if rd.r0 > 0 {
			rd.w = copy(rd.buf[:], rd.buf[rd.r0:rd.w])
			rd.r0 = 0
		}
		m, rerr := rd.r.Read(rd.buf[rd.w:])
		rd.w += m
		if rerr != nil && m == 0 {
			if errors.Is(rerr, io.EOF) && rd.w > 0 {
				rerr = io.ErrUnexpectedEOF
			}
			rd.done = rerr
			return rerr
		}
	}
}
