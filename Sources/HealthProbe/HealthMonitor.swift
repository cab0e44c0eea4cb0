import Foundation
import Metrics
import Synchronization

/// One site in `/status`.
public struct SiteStatus: Codable, Sendable {
    public var site: String
    /// up, down, full, drain, unknown or "not probed".
    public var state: String
    public var why: String
    /// Seconds since 1970 of the last change, and the same as text (UTC).
    public var since: Double
    public var sinceText: String
    public var forced: String?
    public var load: Double?
    public var models: [String]?
    public var lastProbe: String
    public var lastSuccess: Double?
    public var rttMilliseconds: Double?
    public var unsettled: Bool

    public init(
        site: String, state: String, why: String, since: Double, sinceText: String, forced: String?, load: Double?,
        models: [String]?,
        lastProbe: String, lastSuccess: Double?, rttMilliseconds: Double?, unsettled: Bool
    ) {
        self.site = site
        self.state = state
        self.why = why
        self.since = since
        self.sinceText = sinceText
        self.forced = forced
        self.load = load
        self.models = models
        self.lastProbe = lastProbe
        self.lastSuccess = lastSuccess
        self.rttMilliseconds = rttMilliseconds
        self.unsettled = unsettled
    }
}

/// The health of every probed site: probe results go in, a view for steering comes out, and a
/// signal on `changes` whenever that view may have changed. Sites that are not probed are not
/// held here (steering counts them up).
public final class HealthMonitor: Sendable {
    struct State {
        var sites: [String: SiteState] = [:]
        /// Saved states not yet claimed by a configured site (warm start).
        var restored: [String: SavedSiteState] = [:]
        /// Sites configured that have no probe result yet (the first round).
        var pending: Set<String> = []
        var lastView: [String: Observed] = [:]
    }

    private let state = Mutex(State())
    /// Every time held here is on `clock`, a monotonic scale, so that a step of the wall clock
    /// (NTP, an operator) never makes capacity or model data stale or fresh, nor moves a state's
    /// age. Times shown (`status`) and saved (`save`) are converted to the wall clock, and saved
    /// ones back on `restore`.
    private let clock: @Sendable () -> Double
    private let wallClock: (@Sendable () -> Double)?
    public let changes: AsyncStream<Void>
    private let changed: AsyncStream<Void>.Continuation

    /// A monotonic clock for the states and the system's wall clock for what is shown and saved.
    public convenience init() {
        self.init(clock: HealthMonitor.monotonicSeconds, wallClock: { Date().timeIntervalSince1970 })
    }

    /// `clock` for the states; `wallClock` for shown and saved times (nil: `clock` is also the
    /// wall clock, as in tests that drive time).
    public init(clock: @escaping @Sendable () -> Double, wallClock: (@Sendable () -> Double)? = nil) {
        self.clock = clock
        self.wallClock = wallClock
        (changes, changed) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    /// Seconds on CLOCK_MONOTONIC.
    @Sendable public static func monotonicSeconds() -> Double {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
    }

    /// Wall-clock time minus `clock` time, now: added to a time of ours, it gives the wall-clock
    /// time of that moment.
    private var wallOffset: Double { wallClock.map { $0() - clock() } ?? 0 }

    /// Sets the probed sites (at start and on every reload). Sites that stay keep everything
    /// measured (a reload never re-probes from zero); new sites start from a saved state when
    /// there is one, else unknown (counted down until probed); removed sites are forgotten.
    public func configure(_ targets: [ProbeTarget]) {
        state.withLock { state in
            var sites: [String: SiteState] = [:]
            for target in targets {
                if let existing = state.sites[target.site] {
                    sites[target.site] = existing.rules == target.rules ? existing : existing.with(rules: target.rules)
                } else if let saved = state.restored.removeValue(forKey: target.site) {
                    sites[target.site] = SiteState(rules: target.rules, restoring: saved)
                } else {
                    sites[target.site] = SiteState(rules: target.rules)
                    state.pending.insert(target.site)
                }
            }
            state.pending = state.pending.filter { sites[$0] != nil }
            state.sites = sites
        }
        changed.yield()
    }

    /// Saved states from an earlier run, used by `configure` for the sites it names.
    public func restore(_ saved: [String: SavedSiteState]) {
        let offset = wallOffset
        state.withLock { $0.restored = saved.mapValues { $0.shifted(by: -offset) } }
    }

    /// Whether every configured site has a state (probed, or restored from disk).
    public var hasFirstRound: Bool { state.withLock { $0.pending.isEmpty } }

    /// Waits until every site has a probe result or restored state, or `timeout` seconds.
    public func awaitFirstRound(timeout: Double) async -> Bool {
        let deadline = ContinuousClock.now + .milliseconds(Int64(timeout * 1000))
        while ContinuousClock.now < deadline {
            if hasFirstRound { return true }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return hasFirstRound
    }

    /// Records one probe of a site.
    public func record(site id: String, result: ProbeResult) {
        let now = clock()
        var transitioned = false
        var effective: (up: Bool, saturated: Bool)? = nil
        var lastSuccess: Double? = nil
        var viewChanged = false
        let known = state.withLock { state -> Bool in
            guard var site = state.sites[id] else { return false }
            let before = site.effective(at: now)
            site.note(
                result: result.detail.isEmpty ? (result.healthy ? "ok" : "failed") : result.detail, rtt: result.rtt)
            site.recordProbe(success: result.healthy, at: now, detail: result.detail)
            if let capacity = result.capacity {
                site.recordCapacity(capacity.load, at: now)
            }
            if let models = result.models { site.recordModels(models, at: now) }
            let after = site.effective(at: now)
            transitioned = before != after
            effective = after
            lastSuccess = site.lastSuccess
            state.sites[id] = site
            state.pending.remove(id)
            // Only this site can have changed: compare its view alone (O(1) per probe).
            let view = Self.view(of: site, now)
            if state.lastView[id] != view {
                state.lastView[id] = view
                viewChanged = true
            }
            return true
        }
        guard known, let effective else { return }
        let dimensions = [("site", id)]
        Gauge(label: "tdn_site_up", dimensions: dimensions).record(effective.up ? 1 : 0)
        Gauge(label: "tdn_site_saturated", dimensions: dimensions).record(effective.saturated ? 1 : 0)
        if let capacity = result.capacity {
            Gauge(label: "tdn_site_load", dimensions: dimensions).record(capacity.load)
        }
        if let lastSuccess {
            Gauge(label: "tdn_site_last_success_timestamp_seconds", dimensions: dimensions).record(lastSuccess)
        }
        if let rtt = result.rtt {
            Timer(label: "tdn_probe_rtt_seconds", dimensions: dimensions).recordNanoseconds(Int64(rtt * 1e9))
        }
        for check in result.checks {
            Counter(
                label: "tdn_probes_total",
                dimensions: [("kind", check.kind), ("result", check.ok ? "success" : "failure")]
            ).increment()
        }
        if transitioned { Counter(label: "tdn_site_state_changes_total", dimensions: dimensions).increment() }
        if viewChanged { changed.yield() }
    }

    /// Forces a site up, down or to drain; nil clears it. Forced states survive reloads and
    /// restarts (they are saved). Returns false for a site that is not probed.
    public func force(site: String, _ forced: ForcedState?) -> Bool { force(sites: [site], forced).isEmpty }

    /// Forces several sites at once (one change of the view, one re-steering): all of them, or,
    /// when some are not probed, none. Returns the sites that are not probed.
    public func force(sites: [String], _ forced: ForcedState?) -> [String] {
        let now = clock()
        let outcome = state.withLock { state -> (unknown: [String], effective: [(String, Bool)]) in
            let unknown = sites.filter { state.sites[$0] == nil }
            guard unknown.isEmpty else { return (unknown, []) }
            var effective: [(String, Bool)] = []
            for site in sites {
                state.sites[site]!.force(forced, at: now)
                effective.append((site, state.sites[site]!.effective(at: now).up))
            }
            return ([], effective)
        }
        guard outcome.unknown.isEmpty else { return outcome.unknown }
        for (site, up) in outcome.effective {
            Gauge(label: "tdn_site_up", dimensions: [("site", site)]).record(up ? 1 : 0)
            Counter(label: "tdn_site_state_changes_total", dimensions: [("site", site)]).increment()
        }
        publishIfChanged()
        return []
    }

    /// Re-evaluates the view (time alone makes data stale); signals `changes` if it differs.
    public func publishIfChanged() {
        let now = clock()
        let differs = state.withLock { state -> Bool in
            let view = Self.view(state, now)
            guard view != state.lastView else { return false }
            state.lastView = view
            return true
        }
        if differs { changed.yield() }
    }

    /// What steering is told of one site; a change of it is a change on `changes`.
    package struct Observed: Hashable {
        package var up: Bool
        package var saturated: Bool
        /// nil: every model counts as loaded (the site is not probed for models).
        package var models: Set<String>?
        /// Near a state change, or its data is stale: answers with it get a short TTL.
        package var unsettled: Bool
        /// When a down site was last up (nil while it is up).
        package var lastUp: Double?
    }

    /// The current view of every probed site, for tests that compare it whole.
    package func view() -> [String: Observed] {
        let now = clock()
        return state.withLock { Self.view($0, now) }
    }

    /// The current view of every probed site, each in the consumer's own shape (`make` gets
    /// whether it is up and full, its loaded models (nil: not probed for models), whether it is
    /// near a state change or its data is stale, and when a down site was last up).
    public func view<Health>(
        _ make: (_ up: Bool, _ saturated: Bool, _ models: Set<String>?, _ unsettled: Bool, _ lastUp: Double?) -> Health
    ) -> [String: Health] {
        view().mapValues { make($0.up, $0.saturated, $0.models, $0.unsettled, $0.lastUp) }
    }

    private static func view(_ state: State, _ now: Double) -> [String: Observed] {
        state.sites.mapValues { view(of: $0, now) }
    }

    private static func view(of site: SiteState, _ now: Double) -> Observed {
        let effective = site.effective(at: now)
        return Observed(
            up: effective.up, saturated: effective.saturated, models: site.loadedModels(at: now),
            unsettled: site.forced == nil && site.nearChange(at: now),
            // Only a down site's last-up time matters (last-known-good); an up site's would
            // change with every probe.
            lastUp: effective.up ? nil : site.lastUp)
    }

    /// The latest load figure of every site whose figure is fresh (no older than the site's
    /// stale bound) and that is up: what answer-share budgets weigh. Others are left out.
    public func freshLoads() -> [String: Double] {
        let now = clock()
        return state.withLock { state in
            state.sites.compactMapValues { site in
                guard site.effective(at: now).up, let load = site.load, let at = site.capacityAt,
                    now - at <= site.rules.staleAfter
                else { return nil }
                return load
            }
        }
    }

    /// Every probed site for `/status`, sorted by id.
    public func status() -> [SiteStatus] {
        let now = clock()
        let offset = wallOffset
        return state.withLock { state in
            state.sites.keys.sorted().map { id in
                let site = state.sites[id]!
                let effective = site.effective(at: now)
                let name: String
                switch (site.forced, site.up, effective.saturated) {
                case (.drain?, _, _): name = "drain"
                case (.down?, _, _): name = "down"
                case (_, nil, _) where site.forced == nil: name = "unknown"
                case _ where !effective.up: name = "down"
                case (_, _, true): name = "full"
                default: name = "up"
                }
                var why = site.reason
                if let capacityAt = site.capacityAt, now - capacityAt > site.rules.staleAfter {
                    why += "; capacity data \(Int(now - capacityAt)) s old counts as full"
                }
                let since = site.since > 0 ? site.since + offset : 0
                return SiteStatus(
                    site: id, state: name, why: why, since: since, sinceText: Self.format(since),
                    forced: site.forced?.rawValue,
                    load: site.load, models: site.loadedModels(at: now).map { $0.sorted() }, lastProbe: site.lastResult,
                    lastSuccess: site.lastSuccess.map { $0 + offset },
                    rttMilliseconds: site.rtt.map { ($0 * 1e6).rounded() / 1e3 },
                    unsettled: site.forced == nil && site.nearChange(at: now))
            }
        }
    }

    /// `2026-12-02T01:02:03Z` (ISO 8601, UTC): called for every site under the lock, so no
    /// formatter object is made per call.
    static func format(_ time: Double) -> String {
        guard time > 0 else { return "never" }
        var seconds = time_t(time)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return
            "\(parts.tm_year + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday))T\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec))Z"
    }

    /// Why a probed site is in its state (one site, cheaply: for log lines on transitions).
    public func reason(of site: String) -> String? { state.withLock { $0.sites[site]?.reason } }

    // MARK: - Persistence (warm start)

    /// Writes every site's state to `path` (atomically: a temporary file, then rename).
    public func save(to path: String) throws {
        let offset = wallOffset
        let saved = state.withLock { state in
            var all = state.restored
            for (id, site) in state.sites { all[id] = site.saved }
            return all.mapValues { $0.shifted(by: offset) }
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
        let data = try encoder.encode(SavedHealth(version: 1, savedAt: clock() + offset, sites: saved))
        try data.write(to: URL(fileURLWithPath: path), options: .atomic)
    }

    /// Reads states saved by `save`; nil when there is no file, an error when it is unreadable.
    public static func loadSaved(from path: String) throws -> [String: SavedSiteState]? {
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        return try JSONDecoder().decode(SavedHealth.self, from: data).sites
    }
}

struct SavedHealth: Codable {
    var version: Int
    var savedAt: Double
    var sites: [String: SavedSiteState]
}
