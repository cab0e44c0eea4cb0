#if canImport(Glibc)
import Glibc
#endif

/// A minimal blocking DNS client over UDP and TCP (our own, for tests and tools).
package struct DNSClient: Sendable {
    public var server: ListenAddress
    public var timeoutMilliseconds: Int

    public init(server: ListenAddress, timeoutMilliseconds: Int = 2000) {
        self.server = server
        self.timeoutMilliseconds = timeoutMilliseconds
    }

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    /// Sends one datagram and returns the first datagram that comes back.
    public func udp(_ query: [UInt8]) throws -> [UInt8] {
        let fd = try connected(type: SOCK_DGRAM)
        defer { close(fd) }
        guard send(fd, query, query.count, 0) == query.count else { throw Failure(description: "send: \(errnoText())") }
        var buffer = [UInt8](repeating: 0, count: 65535)
        let count = recv(fd, &buffer, buffer.count, 0)
        guard count >= 0 else { throw Failure(description: "no UDP answer from \(server): \(errnoText())") }
        return Array(buffer[0..<count])
    }

    /// Sends the queries on one TCP connection (pipelined, each with its length prefix) and
    /// reads `expecting` answers (default: one per query).
    public func tcp(_ queries: [[UInt8]], expecting: Int? = nil) throws -> [[UInt8]] {
        let fd = try connected(type: SOCK_STREAM)
        defer { close(fd) }
        var stream: [UInt8] = []
        for query in queries { stream += [UInt8(query.count >> 8), UInt8(query.count & 0xFF)] + query }
        try sendAll(fd, stream)
        return try readFrames(fd, count: expecting ?? queries.count)
    }

    /// Opens a TCP connection for callers that want to write byte by byte.
    public func openTCP() throws -> Int32 { try connected(type: SOCK_STREAM) }

    public func sendAll(_ fd: Int32, _ bytes: [UInt8]) throws {
        var sent = 0
        while sent < bytes.count {
            let count = bytes[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard count > 0 else { throw Failure(description: "send: \(errnoText())") }
            sent += count
        }
    }

    public func readFrames(_ fd: Int32, count: Int) throws -> [[UInt8]] {
        var answers: [[UInt8]] = []
        var pending: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while answers.count < count {
            if pending.count >= 2 {
                let length = Int(pending[0]) << 8 | Int(pending[1])
                if pending.count >= 2 + length {
                    answers.append(Array(pending[2..<(2 + length)]))
                    pending.removeFirst(2 + length)
                    continue
                }
            }
            let received = recv(fd, &buffer, buffer.count, 0)
            guard received > 0 else {
                throw Failure(
                    description: received == 0
                        ? "connection closed after \(answers.count) answers" : "recv: \(errnoText())")
            }
            pending += buffer[0..<received]
        }
        return answers
    }

    /// Sends a query and decodes the answer.
    public func query(_ message: Message, tcp: Bool = false) throws -> Message {
        let bytes = tcp ? try self.tcp([message.encoded()])[0] : try udp(message.encoded())
        do { return try Message(decoding: bytes) } catch { throw Failure(description: "undecodable answer: \(error)") }
    }

    private func connected(type: __socket_type) throws -> Int32 {
        guard var storage = server.socketAddress() else { throw Failure(description: "bad address \(server)") }
        let fd = socket(server.isIPv6 ? AF_INET6 : AF_INET, Int32(type.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: "socket: \(errnoText())") }
        var timeout = timeval(tv_sec: timeoutMilliseconds / 1000, tv_usec: (timeoutMilliseconds % 1000) * 1000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let length = socklen_t(server.isIPv6 ? MemoryLayout<sockaddr_in6>.size : MemoryLayout<sockaddr_in>.size)
        let result = withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, length) }
        }
        guard result == 0 else {
            close(fd)
            throw Failure(description: "connect \(server): \(errnoText())")
        }
        return fd
    }
}

func errnoText() -> String { String(cString: strerror(errno)) }
