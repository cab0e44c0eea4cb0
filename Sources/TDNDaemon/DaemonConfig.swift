import Foundation
import LedgerSync
import TDNDNS
import Yams

#if canImport(Glibc)
import Glibc
#endif

/// The daemon's configuration: one YAML file (README "Configuration"), then command-line
/// overrides. Relative paths in the file are relative to the file's directory.
public struct DaemonConfig: Sendable {
    public var file: String?
    public var zones = "zones"
    /// The steering policy (YAML); none: no model hostnames are steered.
    public var policy: String?
    /// The MaxMind-format geo database; none: clients are located by operator networks only.
    public var geoip: String?
    public var listen: [ListenAddress] = [ListenAddress("127.0.0.1:5353")!, ListenAddress("[::1]:5353")!]
    public var status: ListenAddress? = ListenAddress("127.0.0.1:9153")
    /// 0: one per core.
    public var threads = 0
    public var udpPayloadSize = 1232
    public var tcpIdleTimeout = 10
    public var tcpMaxConnections = 1024
    /// Seconds a TCP query may take to arrive once its first byte has (slowloris).
    public var tcpMessageTimeout = 5
    /// TCP connections one client address may hold open.
    public var tcpMaxPerClient = 16
    /// Seconds a changed zone file must stay unchanged (size and mtime) before it is loaded.
    public var watchSettle = 2
    /// Limits of the status server and the ledger's API.
    var http = HTTPLimits()
    /// Seconds between checks of the zone files for changes; 0 turns the watcher off.
    public var watchInterval = 2
    /// Where the health state is saved for a warm start (`health.json`); none: not saved.
    public var stateDir: String?
    /// The bearer token of the admin endpoints (`/admin/...`); none: they are off.
    public var adminToken: String?
    /// With no saved state, how long the first probe round may hold back the DNS listeners.
    public var probeStartTimeout = 10
    /// Probes in flight at most.
    public var probeConcurrency = 256
    /// The token ledger (`tdnd ledger serve`): the `ledger:` section.
    public var ledger = LedgerConfig()

    public struct LedgerConfig: Sendable {
        public var listen = ListenAddress("127.0.0.1:9154")!
        public var data = "ledger"
        public var settings = LedgerSettings()
        /// The central PostgreSQL to ship records to; none: SQLite only.
        public var sync: SyncSettings?
    }

    public init() {}

    /// Where a bare `tdnd serve` looks for its configuration: `./tdnd.yaml`, then the demo
    /// configuration of the source tree it was built from.
    public static func defaultFile() -> String? {
        if access("tdnd.yaml", R_OK) == 0 { return "tdnd.yaml" }
        let source = "\(#filePath)".split(separator: "/", omittingEmptySubsequences: false).dropLast(3).joined(
            separator: "/")
        let candidate = source + "/tdnd.yaml"
        return access(candidate, R_OK) == 0 ? candidate : nil
    }

    /// Reads `path`, reporting every problem as `file:line: message`.
    public static func load(path: String) throws(ConfigErrors) -> DaemonConfig {
        guard let bytes = readWholeFile(path) else {
            throw ConfigErrors([ConfigError(file: path, line: 0, message: "cannot read the configuration file")])
        }
        var config = DaemonConfig()
        config.file = path
        let root: Node?
        do {
            root = try Yams.compose(yaml: String(decoding: bytes, as: UTF8.self))
        } catch let error as YamlError {
            throw ConfigErrors([ConfigError(file: path, line: yamlLine(error), message: "YAML: \(error)")])
        } catch {
            throw ConfigErrors([ConfigError(file: path, line: 0, message: "YAML: \(error)")])
        }
        guard let root else { return config }
        guard let mapping = root.mapping else {
            throw ConfigErrors([
                ConfigError(file: path, line: root.mark?.line ?? 0, message: "expected a mapping of settings")
            ])
        }
        var errors: [ConfigError] = []
        let directory = path.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
        func relative(_ value: String) -> String {
            value.hasPrefix("/") || directory.isEmpty ? value : directory + "/" + value
        }
        for (keyNode, value) in mapping {
            let key = keyNode.string ?? ""
            let line = keyNode.mark?.line ?? 0
            func fail(_ message: String) {
                errors.append(ConfigError(file: path, line: line, message: "\(key): \(message)"))
            }
            func integer(_ range: ClosedRange<Int>) -> Int? {
                guard let number = value.int, range.contains(number) else {
                    fail("expected a whole number from \(range.lowerBound) to \(range.upperBound)")
                    return nil
                }
                return number
            }
            switch key {
            case "zones":
                if let text = value.string, !text.isEmpty {
                    config.zones = relative(text)
                } else {
                    fail("expected a directory")
                }
            case "policy":
                if let text = value.string, !text.isEmpty {
                    config.policy = relative(text)
                } else {
                    fail("expected a file")
                }
            case "geoip":
                if let text = value.string, !text.isEmpty {
                    config.geoip = relative(text)
                } else {
                    fail("expected a file")
                }
            case "listen":
                let items = value.sequence.map { Array($0) } ?? [value]
                var addresses: [ListenAddress] = []
                for item in items {
                    if let text = item.string, let address = ListenAddress(text) {
                        addresses.append(address)
                    } else {
                        errors.append(
                            ConfigError(
                                file: path, line: item.mark?.line ?? line,
                                message: "listen: '\(item.string ?? "?")' is not HOST:PORT (IPv6 as [::1]:5353)"))
                    }
                }
                if addresses.isEmpty { fail("at least one address is needed") }
                config.listen = addresses
            case "status":
                if value.string == "off" || value.null != nil {
                    config.status = nil
                } else if let text = value.string, let address = ListenAddress(text) {
                    config.status = address
                } else {
                    fail("expected HOST:PORT or off")
                }
            case "threads":
                if let number = integer(0...256) { config.threads = number }
            case "udp-payload-size":
                if let number = integer(512...4096) { config.udpPayloadSize = number }
            case "tcp-idle-timeout":
                if let number = integer(1...3600) { config.tcpIdleTimeout = number }
            case "tcp-max-connections":
                if let number = integer(1...1_000_000) { config.tcpMaxConnections = number }
            case "watch-interval":
                if let number = integer(0...3600) { config.watchInterval = number }
            case "watch-settle":
                if let number = integer(0...3600) { config.watchSettle = number }
            case "tcp-message-timeout":
                if let number = integer(1...3600) { config.tcpMessageTimeout = number }
            case "tcp-max-per-client":
                if let number = integer(1...1_000_000) { config.tcpMaxPerClient = number }
            case "http-max-connections":
                if let number = integer(1...1_000_000) { config.http.maxConnections = number }
            case "http-header-timeout":
                if let number = integer(1...3600) { config.http.headTimeout = .seconds(Int64(number)) }
            case "http-body-timeout":
                if let number = integer(1...3600) { config.http.bodyTimeout = .seconds(Int64(number)) }
            case "state-dir":
                if let text = value.string, !text.isEmpty {
                    config.stateDir = relative(text)
                } else {
                    fail("expected a directory")
                }
            case "admin-token":
                if let text = value.string, text.count >= 16 {
                    config.adminToken = text
                } else {
                    fail("expected a token of at least 16 characters")
                }
            case "admin-token-file":
                if let text = value.string, let bytes = readWholeFile(relative(text)) {
                    let token = String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
                    if token.count >= 16 {
                        config.adminToken = token
                    } else {
                        fail("the token in \(text) is shorter than 16 characters")
                    }
                } else {
                    fail("cannot read the token file")
                }
            case "probe-start-timeout":
                if let number = integer(0...600) { config.probeStartTimeout = number }
            case "probe-concurrency":
                if let number = integer(1...65536) { config.probeConcurrency = number }
            case "ledger":
                guard let section = value.mapping else {
                    fail("expected a mapping (listen, data, edges, admin-key, tenants, rates, clock-skew)")
                    continue
                }
                for (itemKey, item) in section {
                    let name = itemKey.string ?? ""
                    let itemLine = itemKey.mark?.line ?? line
                    func bad(_ message: String) {
                        errors.append(ConfigError(file: path, line: itemLine, message: "ledger.\(name): \(message)"))
                    }
                    switch name {
                    case "listen":
                        if let text = item.string, let address = ListenAddress(text) {
                            config.ledger.listen = address
                        } else {
                            bad("expected HOST:PORT")
                        }
                    case "data":
                        if let text = item.string, !text.isEmpty {
                            config.ledger.data = relative(text)
                        } else {
                            bad("expected a directory")
                        }
                    case "clock-skew":
                        if let number = item.int, (1...3600).contains(number) {
                            config.ledger.settings.clockSkew = Double(number)
                        } else {
                            bad("expected seconds, 1 to 3600")
                        }
                    case "admin-key":
                        if let text = item.string, text.count >= 16 {
                            config.ledger.settings.adminKey = text
                        } else {
                            bad("expected a key of at least 16 characters")
                        }
                    case "edges":
                        guard let edges = item.mapping else {
                            bad("expected site: key pairs")
                            continue
                        }
                        for (edge, key) in edges {
                            if let id = edge.string, let text = key.string, text.count >= 16 {
                                config.ledger.settings.edges[ExactKey(id)] = text
                            } else {
                                errors.append(
                                    ConfigError(
                                        file: path, line: edge.mark?.line ?? itemLine,
                                        message:
                                            "ledger.edges.\(edge.string ?? "?"): expected a key of at least 16 characters"
                                    ))
                            }
                        }
                    case "tenants":
                        let names = item.sequence.map { $0.compactMap(\.string) } ?? []
                        if names.isEmpty {
                            bad("expected a list of tenant names")
                        } else {
                            config.ledger.settings.tenants = Set(names.map(ExactKey.init))
                        }
                    case "rates":
                        guard let rates = item.mapping else {
                            bad("expected model: {prompt, completion}")
                            continue
                        }
                        for (model, rate) in rates {
                            let fields =
                                rate.mapping.map {
                                    Dictionary(uniqueKeysWithValues: $0.map { ($0.key.string ?? "", $0.value) })
                                } ?? [:]
                            let prompt = fields["prompt"].flatMap { $0.float ?? $0.int.map(Double.init) }
                            let completion = fields["completion"].flatMap { $0.float ?? $0.int.map(Double.init) }
                            if let id = model.string, let prompt, let completion, Amounts.rate.contains(prompt),
                                Amounts.rate.contains(completion), fields.count == 2
                            {
                                config.ledger.settings.rates[ExactKey(id)] = Rate(
                                    prompt: prompt, completion: completion)
                            } else {
                                errors.append(
                                    ConfigError(
                                        file: path, line: model.mark?.line ?? itemLine,
                                        message:
                                            "ledger.rates.\(model.string ?? "?"): expected {prompt: N, completion: N}, credits per 1,000 tokens (0 to 1,000,000)"
                                    ))
                            }
                        }
                    case "sync":
                        guard let fields = item.mapping else {
                            bad("expected {host, port, user, password, database, node, batch, interval}")
                            continue
                        }
                        var sync = SyncSettings()
                        for (field, value) in fields {
                            let key = field.string ?? ""
                            func wrong(_ message: String) {
                                errors.append(
                                    ConfigError(
                                        file: path, line: field.mark?.line ?? itemLine,
                                        message: "ledger.sync.\(key): \(message)"))
                            }
                            switch key {
                            case "host":
                                if let text = value.string, !text.isEmpty {
                                    sync.host = text
                                } else {
                                    wrong("expected a host")
                                }
                            case "port":
                                if let number = value.int, (1...65535).contains(number) {
                                    sync.port = number
                                } else {
                                    wrong("expected a port")
                                }
                            case "user":
                                if let text = value.string, !text.isEmpty {
                                    sync.user = text
                                } else {
                                    wrong("expected a user name")
                                }
                            case "password": sync.password = value.string
                            case "database":
                                if let text = value.string, !text.isEmpty {
                                    sync.database = text
                                } else {
                                    wrong("expected a database name")
                                }
                            case "node":
                                if let text = value.string, !text.isEmpty {
                                    sync.node = text
                                } else {
                                    wrong("expected this ledger's name")
                                }
                            case "batch":
                                if let number = value.int, (1...100_000).contains(number) {
                                    sync.batch = number
                                } else {
                                    wrong("expected 1 to 100000")
                                }
                            case "interval":
                                if let number = value.float ?? value.int.map(Double.init), number > 0, number <= 3600 {
                                    sync.interval = number
                                } else {
                                    wrong("expected seconds")
                                }
                            default: wrong("unknown setting")
                            }
                        }
                        config.ledger.sync = sync
                    default:
                        bad("unknown setting")
                    }
                }
            default:
                fail("unknown setting")
            }
        }
        if !errors.isEmpty { throw ConfigErrors(errors) }
        return config
    }

    private static func yamlLine(_ error: YamlError) -> Int {
        switch error {
        case .scanner(_, _, let mark, _), .parser(_, _, let mark, _), .composer(_, _, let mark, _):
            return mark.line
        default:
            return 0
        }
    }
}
