import ConfigFile
import Logging
import TDNDNS

#if canImport(Glibc)
import Glibc
#endif

/// Starts the DNS server in-process on 127.0.0.1 with a free port, from zone files written to a
/// fresh temporary directory; tests query it with `client` (or dig) and can rewrite zone files
/// and reload.
public final class TestServer: @unchecked Sendable {
    public let directory: String
    public let server: DNSServer
    public let reloader: ZoneReloader<ZoneSet>

    public var port: Int { server.addresses[0].port }
    public var address: ListenAddress { server.addresses[0] }
    package var client: DNSClient { DNSClient(server: address) }
    public var snapshot: Snapshot { server.store.load() }

    private init(directory: String, server: DNSServer, reloader: ZoneReloader<ZoneSet>) {
        self.directory = directory
        self.server = server
        self.reloader = reloader
    }

    public struct StartError: Error, CustomStringConvertible {
        public let description: String
    }

    /// `zones` maps file names (`example.zone`) to their text. `load`, when given, compiles the
    /// snapshot from the directory instead of the zones alone (e.g. with a steering policy).
    public static func start(
        zones: [String: String], threads: Int = 2, maxUDPPayload: Int = 1232,
        load: (@Sendable (String) -> Result<ZoneSet, ConfigErrors>)? = nil, settle: Double = 0,
        clock: @escaping @Sendable () -> Double = monotonicSeconds,
        configure: (inout ServerSettings) -> Void = { _ in }
    ) async throws -> TestServer {
        let directory = makeTemporaryDirectory()
        for (name, text) in zones { writeFile(directory + "/" + name, text) }
        let loader: ZoneReloader<ZoneSet>.Load
        if let load {
            loader = { _ in load(directory) }
        } else {
            loader = { previous in ZoneSet.load(directory: directory, previous: previous) }
        }
        let set: ZoneSet
        switch loader(nil) {
        case .success(let loaded): set = loaded
        case .failure(let errors): throw StartError(description: errors.description)
        }
        let store = SnapshotStore(set.snapshot)
        var settings = ServerSettings(listen: [ListenAddress(host: "127.0.0.1", port: 0)], threads: threads)
        settings.maxUDPPayload = maxUDPPayload
        configure(&settings)
        let server = try await DNSServer.start(settings: settings, store: store)
        var logger = Logger(label: "tdn.test")
        logger.logLevel = .critical
        let reloader = ZoneReloader(
            directory: directory, initial: set, store: store, logger: logger, settle: settle, clock: clock, load: loader
        )
        return TestServer(directory: directory, server: server, reloader: reloader)
    }

    /// Replaces (or adds) a zone file in the server's directory.
    public func write(_ name: String, _ text: String) { writeFile(directory + "/" + name, text) }

    public func stop() async {
        await server.stop()
        _ = system("rm -rf '\(directory)'")
    }
}

/// A new empty directory under $TMPDIR (or /tmp).
public func makeTemporaryDirectory() -> String {
    let base = getenv("TMPDIR").map { String(cString: $0) } ?? "/tmp"
    var template = Array("\(base)/tdn-test-XXXXXX".utf8CString)
    return template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)) }
}

public func writeFile(_ path: String, _ text: String) {
    guard let file = fopen(path, "wb") else { return }
    _ = text.withCString { fputs($0, file) }
    fclose(file)
}
