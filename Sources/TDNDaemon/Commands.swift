import ArgumentParser
import ConfigFile
import Logging
import TDNDNS

#if canImport(Glibc)
import Glibc
#endif

/// `tdnd`: the TDN DNS daemon and its operator tools.
@available(macOS 10.15, *)
public struct TDNCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "tdnd",
        abstract: "TDN DNS: authoritative DNS for a Token Delivery Network.",
        subcommands: [Serve.self, Check.self, Explain.self, Force.self, Simulate.self, LedgerCommand.self],
        defaultSubcommand: Serve.self)

    public init() {}

    /// Parses the command line and runs the chosen subcommand (what `@main` would do).
    public static func runMain() async {
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            exit(withError: error)
        }
    }
}

/// Options shared by `serve` and `check`.
struct CommonOptions: ParsableArguments {
    @Option(help: "The YAML configuration file (default: ./tdnd.yaml, else the bundled demo).")
    var config: String?

    @Option(help: "Directory of *.zone files (overrides `zones`).")
    var zones: String?

    @Option(help: "The steering policy file (overrides `policy`).")
    var policy: String?

    @Option(help: "The MaxMind-format geo database (overrides `geoip`).")
    var geoip: String?

    @Option(help: "Address to serve DNS on, HOST:PORT or [IPv6]:PORT; repeatable (overrides `listen`).")
    var listen: [String] = []

    @Option(help: "HOST:PORT of the status HTTP server, or off (overrides `status`).")
    var status: String?

    @Option(help: "UDP threads per address; 0 = one per core (overrides `threads`).")
    var threads: Int?

    @Option(help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: String = "info"

    /// The configuration file's settings with the command-line overrides applied.
    func resolve() throws(ConfigErrors) -> DaemonConfig {
        var config = DaemonConfig()
        if let file = self.config ?? DaemonConfig.defaultFile() {
            config = try DaemonConfig.load(path: file)
        }
        var errors: [ConfigError] = []
        func fail(_ message: String) { errors.append(ConfigError(file: "command line", line: 0, message: message)) }
        if let zones { config.zones = zones }
        if let policy { config.policy = policy }
        if let geoip { config.geoip = geoip }
        if !listen.isEmpty {
            config.listen = []
            for text in listen {
                if let address = ListenAddress(text) {
                    config.listen.append(address)
                } else {
                    fail("--listen \(text): expected HOST:PORT (IPv6 as [::1]:5353)")
                }
            }
        }
        if let status {
            if status == "off" {
                config.status = nil
            } else if let address = ListenAddress(status) {
                config.status = address
            } else {
                fail("--status \(status): expected HOST:PORT or off")
            }
        }
        if let threads {
            if (0...256).contains(threads) { config.threads = threads } else { fail("--threads: expected 0 to 256") }
        }
        if !errors.isEmpty { throw ConfigErrors(errors) }
        return config
    }

    /// `resolve()`, or every error on stderr and exit status 1.
    func resolveOrExit() throws -> DaemonConfig {
        do { return try resolve() } catch {
            report(error)
            throw ExitCode(1)
        }
    }

    func makeLogger(_ label: String) -> Logger {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        var logger = Logger(label: label) { StreamLogHandler.standardError(label: $0) }
        logger.logLevel = level
        return logger
    }
}

/// Prints every error of a load to stderr, one `file:line: message` per line.
func report(_ errors: ConfigErrors) {
    let text = errors.errors.map { "\($0)\n" }.joined()
    _ = text.withCString { write(2, $0, strlen($0)) }
}

/// What a load gave, or its `file:line` errors on standard error and exit status 1.
func loaded<Value>(_ result: Result<Value, ConfigErrors>) throws -> Value {
    switch result {
    case .success(let value): return value
    case .failure(let errors):
        report(errors)
        throw ExitCode(1)
    }
}

/// `--json` for the commands that can print JSON instead of text.
struct OutputOptions: ParsableArguments {
    @Flag(help: "Print JSON.")
    var json = false
}

struct Check: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Validate the configuration and every zone; exit non-zero with file:line errors.")

    @OptionGroup var options: CommonOptions

    func run() async throws {
        let config = try options.resolveOrExit()
        let loaded = try TDNDaemon.loaded(ConfigurationLoader(config: config).loadAll())
        for zone in loaded.set.snapshot.zones {
            print("ok: zone \(zone.origin) serial \(zone.serial) from \(zone.file)")
        }
        if let policy = loaded.policy {
            print(
                "ok: policy \(policy.file): \(policy.sites.count) sites, \(policy.models.count) models, \(policy.tenants.count) tenants; \(loaded.set.summary)"
            )
        }
        if let geo = loaded.geo { print("ok: geo database \(geo.path) (\(geo.databaseType), IPv\(geo.ipVersion))") }
        print("ok: configuration \(config.file ?? "(built-in defaults)")")
    }
}
