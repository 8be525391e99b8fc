package packet

// Header lengths and field offsets: IPv4 (RFC 791) from the start of the
// IP header, IPv6 (RFC 8200) likewise, TCP (RFC 9293) from the start of
// the TCP header.
const (
	IPv4MinLen = 20 // IPv4 header without options
	IPv6Len    = 40 // IPv6 fixed header
	TCPMinLen  = 20 // TCP header without options

	ipv4VerIHL   = 0  // version (4 bits), header length in words (4 bits)
	ipv4TotalLen = 2  // total length, header included
	ipv4FragOff  = 6  // flags (3 bits), fragment offset (13 bits)
	ipv4TTL      = 8  // time to live; the protocol byte follows
	ipv4Proto    = 9  // transport protocol
	ipv4Csum     = 10 // header checksum
	ipv4Src      = 12 // source address, 4 bytes
	ipv4Dst      = 16 // destination address, 4 bytes

	ipv6VerTC      = 0  // version (4 bits), traffic class, flow label
	ipv6PayloadLen = 4  // payload length, extension headers included
	ipv6NextHdr    = 6  // next header (the transport protocol without extensions)
	ipv6HopLimit   = 7  // hop limit
	ipv6Src        = 8  // source address, 16 bytes
	ipv6Dst        = 24 // destination address, 16 bytes

	tcpSrcPort = 0  // source port
	tcpDstPort = 2  // destination port
	tcpSeq     = 4  // sequence number
	tcpAck     = 8  // acknowledgement number
	tcpDataOff = 12 // data offset in words (4 bits), reserved; the flags byte follows
	tcpFlags   = 13 // flags
	tcpWindow  = 14 // window
	tcpCsum    = 16 // checksum
	tcpOptions = 20 // first option byte

	ipv4FlagDF   = 0x4000 // don't fragment, in the flags/fragment-offset word
	ipv4FragMask = 0x3fff // more-fragments flag and fragment offset
	defaultTTL   = 64     // TTL and hop limit of packets Build writes
)
