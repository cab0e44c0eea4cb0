import TDNDNS

#if canImport(Glibc)
import Glibc
#endif

/// A TCP connection on loopback for tests that must control every byte: half-sent
/// requests, trickled bytes, clients that never read.
public final class RawTCP {
    public let descriptor: Int32

    /// Connects to `host:port` (IPv4 literal) from `source` (another loopback address, e.g.
    /// 127.0.0.2, to play a second client); nil when the connection fails.
    public init?(host: String = "127.0.0.1", port: Int, source: String? = nil) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        /// `call` with `address:port` as a `sockaddr`.
        func with(_ address: String, port: Int, _ call: (UnsafePointer<sockaddr>, socklen_t) -> Int32) -> Int32 {
            var socketAddress = sockaddr_in()
            socketAddress.sin_family = sa_family_t(AF_INET)
            socketAddress.sin_port = in_port_t(UInt16(port).bigEndian)
            inet_pton(AF_INET, address, &socketAddress.sin_addr)
            return withUnsafePointer(to: &socketAddress) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    call($0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
        }
        if let source, with(source, port: 0, { bind(fd, $0, $1) }) != 0 {
            close(fd)
            return nil
        }
        guard with(host, port: port, { connect(fd, $0, $1) }) == 0 else {
            close(fd)
            return nil
        }
        descriptor = fd
    }

    deinit { close(descriptor) }

    /// Sends bytes; false when the peer has closed or reset the connection.
    @discardableResult
    public func send(_ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { Glibc.send(descriptor, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } == bytes.count
    }

    @discardableResult
    public func send(_ text: String) -> Bool { send(Array(text.utf8)) }

    /// Reads what arrives within `timeout` seconds (until the peer closes, or `limit` bytes).
    /// `closed` says whether the peer closed (or reset) the connection. Waits by sleeping the
    /// task (a poll every millisecond), never by holding a thread of the pool.
    public func receive(timeout: Double, limit: Int = 1 << 20) async -> (bytes: [UInt8], closed: Bool) {
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        let deadline = monotonicSeconds() + timeout
        while out.count < limit {
            let left = deadline - monotonicSeconds()
            if left <= 0 { return (out, false) }
            var poller = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
            if poll(&poller, 1, 0) <= 0 {
                try? await Task.sleep(for: .milliseconds(1))
                continue
            }
            let count = buffer.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress, $0.count, 0) }
            if count <= 0 { return (out, true) }
            out.append(contentsOf: buffer[0..<count])
        }
        return (out, false)
    }
}
