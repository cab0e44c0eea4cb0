import GeoPolicy
import TDNDNS

#if canImport(Glibc)
import Glibc
#endif

/// Everything a snapshot is compiled from: zones, then the steering policy and geo database
/// when configured. Used alike by `serve`, `check`, `explain` and every reload, so a file that
/// `check` accepts is exactly one that `serve` can load.
struct ConfigurationLoader: Sendable {
    let config: DaemonConfig
    /// Told of every successful load (for the status server).
    var state: ServingState? = nil

    /// Live health for a policy's sites (the daemon's probes); nil: every site healthy.
    var health: (@Sendable (Policy) -> HealthView)? = nil

    /// The parts of one load, for tools that want more than the snapshot.
    struct Loaded: Sendable {
        var set: ZoneSet
        var policy: Policy?
        var geo: GeoDatabase?
        var zones: [Zone]
        var geography: SteeringGeography?
        /// The health the snapshot was compiled with.
        var health: HealthView

        /// The same configuration under new health: only the decisions and the snapshot are
        /// recomputed (files and the geo database's networks are not read again).
        func recompiled(health: HealthView) -> Loaded {
            guard let policy, let geography else { return self }
            var copy = self
            let (steering, summary) = ConfigurationLoader.steering(policy: policy, geography: geography, health: health)
            copy.set = ZoneSet(
                snapshot: SnapshotBuilder.build(zones, steering: steering), fingerprint: set.fingerprint,
                summary: summary)
            copy.health = health
            return copy
        }
    }

    func load(previous: [Zone]? = nil) -> Result<ZoneSet, ConfigErrors> { loadAll(previous: previous).map(\.set) }

    static func steering(policy: Policy, geography: SteeringGeography, health: HealthView) -> (SteeringTable, String) {
        let made = SteeringPlanner.plan(policy: policy, geography: geography, health: health)
        let summary =
            "\(made.names.count) steered names, \(made.locations.count) location classes, \(made.answers.count) distinct answers"
        return (table(made), summary)
    }

    /// With `previous` (the zones a watcher's reload would replace), a zone whose content
    /// changed without a serial increase is an error (`Zone.unchangedSerials`).
    func loadAll(previous: [Zone]? = nil) -> Result<Loaded, ConfigErrors> {
        var errors: [ConfigError] = []
        func add(_ failure: PolicyErrors) {
            errors += failure.errors.map { ConfigError(file: $0.file, line: $0.line, message: $0.message) }
        }
        var zones: [Zone] = []
        switch ZoneCompiler.load(directory: config.zones) {
        case .success(let loaded):
            zones = loaded
            if let previous { errors += Zone.unchangedSerials(previous: previous, next: zones) }
        case .failure(let failure): errors += failure.errors
        }
        var policy: Policy? = nil
        if let path = config.policy {
            switch PolicyLoader.load(path: path) {
            case .success(let loaded): policy = loaded
            case .failure(let failure): add(failure)
            }
        }
        var geo: GeoDatabase? = nil
        if let path = config.geoip {
            if access(path, F_OK) != 0 {
                errors.append(
                    ConfigError(
                        file: path, line: 0, message: "geo database not found (the demo's is built by `make geoip`)"))
            } else {
                do { geo = try GeoDatabase(path: path) } catch { add(error) }
            }
        }
        guard errors.isEmpty else { return .failure(ConfigErrors(errors)) }

        var watched = zones.flatMap(\.files)
        var steering = SteeringTable()
        var summary = ""
        var geography: SteeringGeography? = nil
        var healthView = HealthView()
        if let policy {
            watched.append(policy.file)
            if let geo { watched.append(geo.path) }
            guard zones.contains(where: { $0.origin.description.lowercased() == policy.zone.lowercased() }) else {
                return .failure(
                    ConfigErrors([
                        ConfigError(
                            file: policy.file, line: 1,
                            message:
                                "zone: \(policy.zone) is not served (no \(policy.zone.dropLast()).zone in \(config.zones))"
                        )
                    ]))
            }
            geography = SteeringPlanner.geography(policy: policy, geo: geo)
            healthView = health?(policy) ?? HealthView()
            (steering, summary) = Self.steering(policy: policy, geography: geography!, health: healthView)
            let conflicts = SnapshotBuilder.conflicts(zones, steering: steering)
            guard conflicts.isEmpty else {
                return .failure(
                    ConfigErrors(
                        conflicts.map { ConfigError(file: policy.file, line: 0, message: "model hostname \($0)") }))
            }
        }
        let set = ZoneSet(
            snapshot: SnapshotBuilder.build(zones, steering: steering),
            fingerprint: ZoneSet.Fingerprint(directory: config.zones, extraFiles: watched), summary: summary)
        let loaded = Loaded(set: set, policy: policy, geo: geo, zones: zones, geography: geography, health: healthView)
        state?.set(loaded)
        return .success(loaded)
    }

    /// The plan in the form TDNDNS takes.
    static func table(_ plan: SteeringPlan) -> SteeringTable {
        var table = SteeringTable()
        table.v4 = plan.v4
        table.v6 = plan.v6
        table.classCount = plan.locations.count
        for (labels, row) in plan.names {
            guard let name = try? DomainName(labels.joined(separator: ".") + "." + plan.zone) else { continue }
            table.names.append((name, row))
        }
        table.answers = plan.answers.map { answer in
            switch (answer.denied, answer.denial) {
            case (true, .servfail): return SteeringTable.Answer(kind: .serverFailure, ttl: answer.ttl)
            case (true, .empty): return SteeringTable.Answer(kind: .denied, ttl: answer.ttl)
            default:
                return SteeringTable.Answer(
                    kind: .addresses, ipv4: answer.ipv4, ipv6: answer.ipv6, ttl: answer.ttl, sites: answer.sites)
            }
        }
        return table
    }
}
