import ConfigFile
import Foundation
import Ledger
import TDNDNS

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

    /// The settings that are a whole number in a range.
    static var wholeNumbers: [String: (ClosedRange<Int>, WritableKeyPath<DaemonConfig, Int>)] {
        [
            "threads": (0...256, \.threads), "udp-payload-size": (512...4096, \.udpPayloadSize),
            "tcp-idle-timeout": (1...3600, \.tcpIdleTimeout),
            "tcp-max-connections": (1...1_000_000, \.tcpMaxConnections),
            "tcp-message-timeout": (1...3600, \.tcpMessageTimeout),
            "tcp-max-per-client": (1...1_000_000, \.tcpMaxPerClient),
            "watch-interval": (0...3600, \.watchInterval), "watch-settle": (0...3600, \.watchSettle),
            "http-max-connections": (1...1_000_000, \.http.maxConnections),
            "probe-start-timeout": (0...600, \.probeStartTimeout), "probe-concurrency": (1...65536, \.probeConcurrency),
        ]
    }

    /// Reads `path`, reporting every problem as `file:line: message`.
    public static func load(path: String) throws(ConfigErrors) -> DaemonConfig {
        var config = DaemonConfig()
        config.file = path
        guard let root = try ConfigReader.load(path: path, what: "the configuration file").get() else { return config }
        var reader = ConfigReader(file: path)
        guard root.mapping != nil else {
            reader.fail(root, nil, "expected a mapping of settings")
            throw ConfigErrors(reader.errors)
        }
        let directory = path.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
        func relative(_ value: String) -> String {
            value.hasPrefix("/") || directory.isEmpty ? value : directory + "/" + value
        }
        let wholeNumbers = Self.wholeNumbers
        for (key, value) in reader.entries(root, "") {
            if let (range, field) = wholeNumbers[key] {
                config[keyPath: field] = reader.integer(value, key, range) ?? config[keyPath: field]
                continue
            }
            switch key {
            case "zones":
                if let text = reader.string(value, key, expected: "expected a directory") {
                    config.zones = relative(text)
                }
            case "policy":
                if let text = reader.string(value, key, expected: "expected a file") { config.policy = relative(text) }
            case "geoip":
                if let text = reader.string(value, key, expected: "expected a file") { config.geoip = relative(text) }
            case "listen":
                var addresses: [ListenAddress] = []
                for item in value.items {
                    if let text = item.string, let address = ListenAddress(text) {
                        addresses.append(address)
                    } else {
                        reader.fail(item, key, "'\(item.string ?? "?")' is not HOST:PORT (IPv6 as [::1]:5353)")
                    }
                }
                if addresses.isEmpty { reader.fail(value, key, "at least one address is needed") }
                config.listen = addresses
            case "status":
                if value.string == "off" || value.isNull {
                    config.status = nil
                } else if let text = value.string, let address = ListenAddress(text) {
                    config.status = address
                } else {
                    reader.fail(value, key, "expected HOST:PORT or off")
                }
            case "http-header-timeout":
                if let number = reader.integer(value, key, 1...3600) {
                    config.http.headTimeout = .seconds(Int64(number))
                }
            case "http-body-timeout":
                if let number = reader.integer(value, key, 1...3600) {
                    config.http.bodyTimeout = .seconds(Int64(number))
                }
            case "state-dir":
                if let text = reader.string(value, key, expected: "expected a directory") {
                    config.stateDir = relative(text)
                }
            case "admin-token":
                config.adminToken = reader.secret(value, key, what: "a token") ?? config.adminToken
            case "admin-token-file":
                if let text = value.string, let bytes = readWholeFile(relative(text)) {
                    let token = String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
                    if token.count >= 16 {
                        config.adminToken = token
                    } else {
                        reader.fail(value, key, "the token in \(text) is shorter than 16 characters")
                    }
                } else {
                    reader.fail(value, key, "cannot read the token file")
                }
            case "ledger":
                guard value.mapping != nil else {
                    reader.fail(
                        value, key, "expected a mapping (listen, data, edges, admin-key, tenants, rates, clock-skew)")
                    continue
                }
                config.ledger.read(value, relative: relative, &reader)
            default:
                reader.fail(value, key, "unknown setting")
            }
        }
        if let failure = reader.failure { throw failure }
        return config
    }
}

extension DaemonConfig.LedgerConfig {
    /// The `ledger:` section.
    mutating func read(_ section: ConfigValue, relative: (String) -> String, _ reader: inout ConfigReader) {
        for (name, item) in reader.entries(section, "ledger") {
            let key = "ledger.\(name)"
            switch name {
            case "listen":
                if let text = item.string, let address = ListenAddress(text) {
                    listen = address
                } else {
                    reader.fail(item, key, "expected HOST:PORT")
                }
            case "data":
                if let text = reader.string(item, key, expected: "expected a directory") { data = relative(text) }
            case "clock-skew":
                if let number = item.int, (1...3600).contains(number) {
                    settings.clockSkew = Double(number)
                } else {
                    reader.fail(item, key, "expected seconds, 1 to 3600")
                }
            case "admin-key":
                settings.adminKey = reader.secret(item, key, what: "a key") ?? settings.adminKey
            case "edges":
                guard let edges = item.mapping else {
                    reader.fail(item, key, "expected site: key pairs")
                    continue
                }
                for edge in edges {
                    if let id = edge.key.string, let text = edge.value.string, text.count >= 16 {
                        settings.edges[ExactKey(id)] = text
                    } else {
                        reader.fail(
                            edge.key, "ledger.edges.\(edge.key.string ?? "?")",
                            "expected a key of at least 16 characters")
                    }
                }
            case "tenants":
                let names = item.sequence?.compactMap(\.string) ?? []
                if names.isEmpty {
                    reader.fail(item, key, "expected a list of tenant names")
                } else {
                    settings.tenants = Set(names.map(ExactKey.init))
                }
            case "rates":
                guard let rates = item.mapping else {
                    reader.fail(item, key, "expected model: {prompt, completion}")
                    continue
                }
                for rate in rates {
                    let fields = ConfigMapping(rate.value.mapping?.map { ($0.key.string ?? "", $0.value) } ?? [])
                    if let id = rate.key.string, let prompt = fields["prompt"]?.number,
                        let completion = fields["completion"]?.number, Amounts.rate.contains(prompt),
                        Amounts.rate.contains(completion), fields.entries.count == 2
                    {
                        settings.rates[ExactKey(id)] = Rate(prompt: prompt, completion: completion)
                    } else {
                        reader.fail(
                            rate.key, "ledger.rates.\(rate.key.string ?? "?")",
                            "expected {prompt: N, completion: N}, credits per 1,000 tokens (0 to 1,000,000)")
                    }
                }
            case "sync":
                guard item.mapping != nil else {
                    reader.fail(item, key, "expected {host, port, user, password, database, node, batch, interval}")
                    continue
                }
                sync = SyncSettings.read(item, &reader)
            default:
                reader.fail(item, key, "unknown setting")
            }
        }
    }
}

extension SyncSettings {
    /// The `ledger.sync:` section.
    static func read(_ section: ConfigValue, _ reader: inout ConfigReader) -> SyncSettings {
        var sync = SyncSettings()
        for (name, value) in reader.entries(section, "ledger.sync") {
            let key = "ledger.sync.\(name)"
            switch name {
            case "host": sync.host = reader.string(value, key, expected: "expected a host") ?? sync.host
            case "port": sync.port = reader.integer(value, key, 1...65535) ?? sync.port
            case "user": sync.user = reader.string(value, key, expected: "expected a user name") ?? sync.user
            case "password": sync.password = value.string
            case "database":
                sync.database = reader.string(value, key, expected: "expected a database name") ?? sync.database
            case "node": sync.node = reader.string(value, key, expected: "expected this ledger's name") ?? sync.node
            case "batch": sync.batch = reader.integer(value, key, 1...100_000) ?? sync.batch
            case "interval":
                if let number = value.number, number > 0, number <= 3600 {
                    sync.interval = number
                } else {
                    reader.fail(value, key, "expected seconds")
                }
            default: reader.fail(value, key, "unknown setting")
            }
        }
        return sync
    }
}
