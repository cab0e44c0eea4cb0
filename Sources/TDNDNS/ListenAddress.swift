#if canImport(Glibc)
import Glibc
#endif

/// A `HOST:PORT` to listen on; IPv6 as `[::1]:5353`.
public struct ListenAddress: Hashable, Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses `127.0.0.1:5353` or `[::1]:5353`.
    public init?(_ text: String) {
        let host: Substring
        let port: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else {
                return nil
            }
            host = text[text.index(after: text.startIndex)..<close]
            port = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":"), !text[..<colon].contains(":") else { return nil }
            host = text[..<colon]
            port = text[text.index(after: colon)...]
        }
        guard let number = Int(port), (0...65535).contains(number), !host.isEmpty else { return nil }
        self.host = String(host)
        self.port = number
        guard socketAddress() != nil else { return nil }
    }

    public var isIPv6: Bool { host.contains(":") }

    public var description: String { isIPv6 ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// The numeric address as a sockaddr_in or sockaddr_in6 (no name lookups).
    func socketAddress() -> sockaddr_storage? {
        /// `address` (a sockaddr_in or sockaddr_in6) in a sockaddr_storage.
        func stored<Address>(_ address: Address) -> sockaddr_storage {
            var storage = sockaddr_storage()
            withUnsafeBytes(of: address) { raw in withUnsafeMutableBytes(of: &storage) { $0.copyMemory(from: raw) } }
            return storage
        }
        if isIPv6 {
            var address = sockaddr_in6()
            address.sin6_family = sa_family_t(AF_INET6)
            address.sin6_port = in_port_t(UInt16(port).bigEndian)
            return inet_pton(AF_INET6, host, &address.sin6_addr) == 1 ? stored(address) : nil
        }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        return inet_pton(AF_INET, host, &address.sin_addr) == 1 ? stored(address) : nil
    }
}
