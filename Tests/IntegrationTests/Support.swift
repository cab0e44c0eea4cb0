import Foundation
import TDNTestSupport
import Testing

extension Tag {
    /// Whole-system tests: processes, failover with real edges, the README's examples.
    @Tag static var slow: Self
}

/// A test daemon's `tdnd.yaml`: zones and `policy.yaml` beside it, DNS and status on free
/// loopback ports, one thread, no file watching; `extra` lines appended.
func daemonConfig(_ extra: String = "") -> String {
    """
    zones: .
    policy: policy.yaml
    listen: [127.0.0.1:0]
    status: 127.0.0.1:0
    threads: 1
    watch-interval: 0
    probe-start-timeout: 5

    """ + extra
}

/// A `tdnd serve --config FILE` process with its stderr in a file, as an operator would run it.
final class DaemonProcess {
    let process = Process()
    let logPath: String

    init(config: String, arguments: [String] = []) throws {
        logPath = config + ".log"
        process.executableURL = URL(fileURLWithPath: tdndPath)
        process.arguments = ["serve", "--config", config] + arguments
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        process.standardError = FileHandle(forWritingAtPath: logPath)
        process.environment = ["SWIFT_BACKTRACE": "enable=no"]
        try process.run()
    }

    deinit { if process.isRunning { process.terminate() } }

    var log: String { String(decoding: FileManager.default.contents(atPath: logPath) ?? Data(), as: UTF8.self) }

    /// Waits up to `timeout` seconds for `text` in the log.
    func waitFor(_ text: String, timeout: Double = 5) async -> Bool {
        for _ in 0..<Int(timeout * 20) where !log.contains(text) { try? await Task.sleep(for: .milliseconds(50)) }
        return log.contains(text)
    }

    /// The DNS port, from the "serving … on 127.0.0.1:PORT (UDP and TCP)" line (the status
    /// server may log its own "on 127.0.0.1:" before it).
    func dnsPort(timeout: Double = 5) async -> Int? {
        for _ in 0..<Int(timeout * 20) {
            if let line = log.split(separator: "\n").first(where: { $0.contains("(UDP and TCP)") }),
                let range = line.range(of: "on 127.0.0.1:")
            {
                return Int(line[range.upperBound...].prefix(while: \.isNumber))
            }
            try? await Task.sleep(for: .milliseconds(50))
        }
        return nil
    }

    /// The port logged after `prefix` (e.g. "status server on 127.0.0.1:"), waiting up to
    /// `timeout` seconds.
    func port(after prefix: String, timeout: Double = 5) async -> Int? {
        for _ in 0..<Int(timeout * 20) {
            if let range = log.range(of: prefix) {
                return Int(log[range.upperBound...].prefix(while: \.isNumber))
            }
            try? await Task.sleep(for: .milliseconds(50))
        }
        return nil
    }
}
