/// A problem in an operator's file, printed as `file:line: key: message` (line 0: the file as a
/// whole; no key: the message alone).
public struct ConfigError: Error, Sendable, Hashable, CustomStringConvertible {
    public var file: String
    public var line: Int
    /// 1-based; 0 when unknown. Not printed (the line is enough to find the place), kept for tools.
    public var column: Int
    /// The setting's path (`sites.fra.probe.interval`); nil for a file-wide problem.
    public var key: String?
    public var message: String

    public init(file: String, line: Int, column: Int = 0, key: String? = nil, message: String) {
        self.file = file
        self.line = line
        self.column = column
        self.key = key
        self.message = message
    }

    public var description: String {
        let place = line > 0 ? "\(file):\(line)" : file
        return key.map { "\(place): \($0): \(message)" } ?? "\(place): \(message)"
    }
}

/// All the errors of one load, reported together (in the order found, each once).
public struct ConfigErrors: Error, Sendable, CustomStringConvertible {
    public var errors: [ConfigError]
    public init(_ errors: [ConfigError]) {
        var seen: Set<ConfigError> = []
        self.errors = errors.filter { seen.insert($0).inserted }
    }
    public var description: String { errors.map(\.description).joined(separator: "\n") }
}

/// The whole content of a file, or nil when it cannot be read.
public func readWholeFile(_ path: String) -> [UInt8]? {
    guard let file = fopen(path, "rb") else { return nil }
    defer { fclose(file) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let count = chunk.withUnsafeMutableBytes { fread($0.baseAddress, 1, 65536, file) }
        if count <= 0 { break }
        bytes += chunk[0..<count]
    }
    return ferror(file) == 0 ? bytes : nil
}

#if canImport(Glibc)
import Glibc
#endif
