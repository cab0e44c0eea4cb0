/// How a site's raw probe results become its state.
public struct HealthRules: Hashable, Sendable {
    /// Consecutive successes that bring a down site up, and failures that take an up site down.
    public var rise = 2
    public var fall = 3
    /// Capacity hysteresis: full above the high-water mark, available again below the low one.
    public var highWater = 0.9
    public var lowWater = 0.75
    /// Capacity figures older than this (seconds) count as full, never as empty.
    public var staleAfter = 15.0
    /// Whether the site's capacity is probed (`/metrics`): then no figure at all (no scrape has
    /// succeeded yet) counts as full too, from the very first probe. Derived from the target
    /// (`ProbeTarget.init`), never set by hand.
    public internal(set) var measuresCapacity = false

    public init(rise: Int = 2, fall: Int = 3, highWater: Double = 0.9, lowWater: Double = 0.75, staleAfter: Double = 15)
    {
        self.rise = rise
        self.fall = fall
        self.highWater = highWater
        self.lowWater = lowWater
        self.staleAfter = staleAfter
    }
}

/// A state an operator forces on a site, whatever the probes say.
public enum ForcedState: String, Hashable, Sendable, CaseIterable {
    case up, down
    /// Up for those already using it, but given no new clients: answers skip it.
    case drain
}

/// One site's health: probe results through rise/fall counts, capacity through hysteresis.
/// Time is passed in (seconds on any monotonic scale), so tests drive it without sleeping.
public struct SiteState: Hashable, Sendable {
    public let rules: HealthRules
    /// nil until the first probe result: a site is never assumed healthy by accident.
    public private(set) var up: Bool?
    public private(set) var saturated = false
    public private(set) var load: Double?
    public private(set) var capacityAt: Double?
    public private(set) var forced: ForcedState?
    /// When `up` or `saturated` last changed, and why.
    public private(set) var since: Double = 0
    public private(set) var reason = "not probed yet"
    /// The models the site lists (nil: not probed for models), and when they were read.
    public private(set) var models: Set<String>?
    public private(set) var modelsAt: Double?
    /// When the site was last seen up as steering sees it (not while forced down or drained:
    /// then it stays at the moment it was taken out), and when a health probe last succeeded.
    public private(set) var lastUp: Double?
    public private(set) var lastSuccess: Double?
    /// The last probe's outcome and round-trip time (seconds).
    public private(set) var lastResult = "none yet"
    public private(set) var rtt: Double?
    private var successes = 0
    private var failures = 0

    public init(rules: HealthRules = HealthRules()) { self.rules = rules }

    /// A state saved by an earlier run (warm start): taken as the current state until the
    /// probes say otherwise. Capacity and model data keep their age, so old data is stale.
    public init(rules: HealthRules, restoring saved: SavedSiteState) {
        self.rules = rules
        up = saved.up
        saturated = saved.saturated
        load = saved.load
        capacityAt = saved.capacityAt
        models = saved.models.map(Set.init)
        modelsAt = saved.modelsAt
        forced = saved.forced.flatMap(ForcedState.init(rawValue:))
        since = saved.since
        reason = saved.reason
        lastUp = saved.lastUp
        lastSuccess = saved.lastSuccess
        lastResult = "restored from the saved state"
    }

    /// This state with new rules (a reload), keeping everything measured.
    public func with(rules: HealthRules) -> SiteState {
        var copy = SiteState(rules: rules, restoring: saved)
        copy.successes = successes
        copy.failures = failures
        copy.lastResult = lastResult
        copy.rtt = rtt
        return copy
    }

    public var saved: SavedSiteState {
        SavedSiteState(
            up: up, saturated: saturated, load: load, capacityAt: capacityAt, models: models.map { $0.sorted() },
            modelsAt: modelsAt,
            forced: forced?.rawValue, since: since, reason: reason, lastUp: lastUp, lastSuccess: lastSuccess)
    }

    /// Records the outcome of a probe for `lastResult` and `rtt` (no state change).
    public mutating func note(result: String, rtt: Double?) {
        lastResult = result
        self.rtt = rtt
    }

    /// Records the models a site lists; returns whether the list changed.
    @discardableResult
    public mutating func recordModels(_ list: Set<String>, at now: Double) -> Bool {
        modelsAt = now
        guard list != models else { return false }
        models = list
        return true
    }

    /// The models a site may be sent clients for: nil when not probed for models; empty when
    /// the list is older than `staleAfter` (a site is eligible only while it lists a model).
    public func loadedModels(at now: Double) -> Set<String>? {
        guard let models else { return modelsAt == nil ? nil : [] }
        guard let modelsAt, now - modelsAt <= rules.staleAfter else { return [] }
        return models
    }

    /// Records one health probe; returns whether `up` changed. The first result sets the state
    /// at once; after that it takes `rise` or `fall` results in a row.
    @discardableResult
    public mutating func recordProbe(success: Bool, at now: Double, detail: String) -> Bool {
        if success {
            successes += 1
            failures = 0
            lastSuccess = now
        } else {
            failures += 1
            successes = 0
        }
        let next: Bool
        switch up {
        case nil: next = success
        case true?: next = failures >= rules.fall ? false : true
        case false?: next = successes >= rules.rise ? true : false
        }
        defer { if up == true && !forcedOut { lastUp = now } }
        guard next != up else { return false }
        up = next
        since = now
        reason = next ? "up: \(detail)" : "down: \(detail)"
        return true
    }

    /// Records a capacity reading (0…1); returns whether `saturated` changed.
    @discardableResult
    public mutating func recordCapacity(_ value: Double, at now: Double) -> Bool {
        load = value
        capacityAt = now
        let next = saturated ? value > rules.lowWater : value > rules.highWater
        guard next != saturated else { return false }
        saturated = next
        since = now
        reason =
            next ? "full: load \(value) above \(rules.highWater)" : "room again: load \(value) below \(rules.lowWater)"
        return true
    }

    /// Whether an operator took the site out of service (forced down, or draining).
    var forcedOut: Bool { forced == .down || forced == .drain }

    public mutating func force(_ state: ForcedState?, at now: Double) {
        // Taken out while up: it was last up now (and stays so while out, whatever the probes
        // say, so that a drained site's view does not change with every probe).
        if up == true && !forcedOut && (state == .down || state == .drain) { lastUp = now }
        forced = state
        since = now
        reason = state.map { "forced \($0.rawValue) by an operator" } ?? "forced state cleared"
    }

    /// What steering should use now: forced state first; unknown counts as down; capacity data
    /// older than `staleAfter` counts as full.
    public func effective(at now: Double) -> (up: Bool, saturated: Bool) {
        switch forced {
        case .down?: return (false, saturated)
        case .drain?: return (false, saturated)
        case .up?: return (true, isSaturated(at: now))
        case nil: return (up ?? false, isSaturated(at: now))
        }
    }

    private func isSaturated(at now: Double) -> Bool {
        guard let capacityAt else { return saturated || rules.measuresCapacity }
        return saturated || now - capacityAt > rules.staleAfter
    }

    /// Whether the next result could change the state (one failure from down, or capacity near
    /// a mark): answers then get a shorter TTL so that resolvers return soon.
    public func nearChange(at now: Double) -> Bool {
        if up == true && failures > 0 { return true }
        if up == false && successes > 0 { return true }
        if let load, load > rules.lowWater && load <= rules.highWater { return true }
        if let capacityAt, now - capacityAt > rules.staleAfter / 2 { return true }
        if rules.measuresCapacity && capacityAt == nil { return true }
        return false
    }
}

/// What is persisted of a site's state for a warm start.
public struct SavedSiteState: Codable, Hashable, Sendable {
    public var up: Bool?
    public var saturated: Bool
    public var load: Double?
    public var capacityAt: Double?
    public var models: [String]?
    public var modelsAt: Double?
    public var forced: String?
    public var since: Double
    public var reason: String
    public var lastUp: Double?
    public var lastSuccess: Double?
}

extension SavedSiteState {
    /// The same state with every time moved by `offset` seconds (between the monitor's
    /// monotonic scale and the wall clock); 0 (never) stays 0.
    func shifted(by offset: Double) -> SavedSiteState {
        var copy = self
        copy.capacityAt = capacityAt.map { $0 + offset }
        copy.modelsAt = modelsAt.map { $0 + offset }
        copy.since = since > 0 ? since + offset : 0
        copy.lastUp = lastUp.map { $0 + offset }
        copy.lastSuccess = lastSuccess.map { $0 + offset }
        return copy
    }
}
