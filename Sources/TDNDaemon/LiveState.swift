import ConfigFile
import Foundation
import GeoPolicy
import HealthProbe
import Logging
import Metrics
import ServiceLifecycle
import Synchronization
import TDNDNS

/// A site's probe settings read by HealthProbe, and the monitor's view as steering's input.
enum ProbePlan {
    /// The settings of `site`'s probe sections, with its own names and addresses for the
    /// `{site}`, `{ipv4}` and `{ipv6}` of URLs.
    static func settings(of site: Site, _ reader: inout ConfigReader) -> ProbeSettings {
        var placeholders = ["{site}": site.id]
        if let address = site.ipv4.first { placeholders["{ipv4}"] = IPPrefix.format(address) }
        if let address = site.ipv6.first { placeholders["{ipv6}"] = "[\(IPPrefix.format(address))]" }
        return ProbeSettings.read(
            site.probe, placeholders: placeholders, key: "sites.\(site.id).probe", line: site.line, into: &reader)
    }

    /// Steering's health input. A probed site the monitor does not know yet counts as down:
    /// never healthy by accident. Sites without probes are left out (they count as up).
    static func view(_ probes: [ProbeTarget], _ monitor: HealthMonitor) -> HealthView {
        let live = monitor.view { up, saturated, models, unsettled, lastUp in
            SiteHealth(up: up, saturated: saturated, models: models, unsettled: unsettled, lastUp: lastUp)
        }
        var view = HealthView()
        for probe in probes { view.sites[probe.site] = live[probe.site] ?? SiteHealth(up: false) }
        return view
    }
}

/// The live side of serving: probes, the health monitor, and every snapshot change (reloads
/// and health alike go through `lock`, so they never publish out of order).
final class LiveState: Sendable {
    let serving: ServingState
    let monitor: HealthMonitor
    let prober: Prober
    let scheduler: ProbeScheduler
    let queryStats = QueryStats()
    /// Held while a snapshot is compiled and published.
    let lock = Mutex<Void>(())
    let statePath: String?
    let adminToken: String?
    let logger: Logger

    init(serving: ServingState, statePath: String?, adminToken: String?, concurrency: Int, logger: Logger) {
        self.serving = serving
        self.statePath = statePath
        self.adminToken = adminToken
        self.logger = logger
        monitor = HealthMonitor()
        prober = Prober()
        scheduler = ProbeScheduler(prober: prober, monitor: monitor, maxConcurrent: concurrency)
    }

    /// Restores the saved states (warm start); returns how many sites were saved.
    func restore() -> Int {
        guard let statePath else { return 0 }
        do {
            guard let saved = try HealthMonitor.loadSaved(from: statePath) else { return 0 }
            monitor.restore(saved)
            return saved.count
        } catch {
            logger.warning("\(statePath): saved health state unreadable (\(error)); starting cold")
            return 0
        }
    }

    func save() {
        guard let statePath else { return }
        do { try monitor.save(to: statePath) } catch {
            logger.warning("\(statePath): cannot save health state: \(error)")
        }
    }

    /// Points the probes at the policy's sites (at start and after each reload).
    func configureProbes(_ targets: [ProbeTarget]) {
        monitor.configure(targets)
        scheduler.update(targets)
    }

    /// Compiling takes a few hundred milliseconds of CPU: it runs on its own thread, so that
    /// the cooperative pool (probes, status server) is never held up by it.
    private static let compileQueue = DispatchQueue(label: "tdn.compile")

    /// Runs `work` on the compile thread.
    static func offPool<T: Sendable>(_ work: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { continuation in
            compileQueue.async { continuation.resume(returning: work()) }
        }
    }

    /// Recompiles the snapshot when the health view changed, and publishes it.
    func rebuild() async {
        await Self.offPool { self.rebuildIfChanged() }
    }

    private func rebuildIfChanged() {
        lock.withLock { _ in
            guard let loaded = serving.loaded, let policy = loaded.policy else { return }
            let view = ProbePlan.view(loaded.probes, monitor)
            guard view != loaded.health else { return }
            for site in policy.sites {
                let before = loaded.health[site.id]
                let after = view[site.id]
                if before.up != after.up || before.saturated != after.saturated || before.models != after.models {
                    let why = monitor.reason(of: site.id) ?? ""
                    logger.notice("site \(site.id): \(Self.describe(before)) → \(Self.describe(after)) (\(why))")
                }
            }
            let started = Self.threadCPUSeconds()
            let helped = loaded.steering?.compiler.otherThreadsCPUSeconds ?? 0
            let rebuilt = loaded.recompiled(health: view)
            serving.publish(rebuilt)
            // This thread's CPU, and what the compiler spent on a second thread.
            let cpu =
                Self.threadCPUSeconds() - started + (rebuilt.steering?.compiler.otherThreadsCPUSeconds ?? 0) - helped
            Counter(label: "tdn_steering_rebuilds_total").increment()
            FloatingPointCounter(label: "tdn_steering_rebuild_cpu_seconds_total").increment(by: cpu)
            if let steering = rebuilt.steering {
                steering.demand.note(
                    rebuilt.set.snapshot.steeringData, names: rebuilt.set.snapshot.steeredNames, at: monotonicSeconds())
            }
            let pairs = rebuilt.steering?.lastRecomputed ?? 0
            Counter(label: "tdn_steering_recomputed_pairs_total").increment(by: pairs)
            logger.debug("steering: \(pairs) (name, class) pairs decided again, \(Int(cpu * 1000)) ms CPU")
            FreedMemory.release()
        }
    }

    /// One answer-share budget pass (`Budgets.swift`), on the compile thread: the data plane's
    /// counts since the last pass become demand, the budgets weigh it against the sites' fresh
    /// load figures, and where a pair's answer changes, the steering part is rebuilt.
    func rebalance() async {
        await Self.offPool { self.rebalanceNow() }
    }

    private func rebalanceNow() {
        lock.withLock { _ in
            let rows = queryStats.takeRows()
            guard let loaded = serving.loaded, let steering = loaded.steering else { return }
            let now = monotonicSeconds()
            let snapshot = loaded.set.snapshot
            steering.demand.note(snapshot.steeringData, names: snapshot.steeredNames, at: now)
            steering.demand.update(rows, at: now)
            let rules = Dictionary(loaded.probes.map { ($0.site, $0.rules) }, uniquingKeysWith: { first, _ in first })
            let changed = steering.rebalance(
                health: loaded.health, loads: monitor.freshLoads(), rules: rules, demand: steering.demand, now: now)
            let figures = steering.budgetFigures
            for site in loaded.policy?.sites ?? [] {
                let dimensions = [("site", site.id)]
                Gauge(label: "tdn_site_demand_share", dimensions: dimensions).record(
                    figures.assignedShare[site.id] ?? 0)
                Gauge(label: "tdn_site_demand_budget_share", dimensions: dimensions).record(
                    figures.budgetShare[site.id] ?? 0)
            }
            Gauge(label: "tdn_steering_budget_moved_pairs").record(figures.moved)
            guard changed else { return }
            let rebuilt = loaded.recompiled(health: loaded.health)
            serving.publish(rebuilt)
            steering.demand.note(rebuilt.set.snapshot.steeringData, names: rebuilt.set.snapshot.steeredNames, at: now)
            Counter(label: "tdn_steering_budget_rebuilds_total").increment()
            logger.debug(
                "steering: budgets moved \(figures.moved) of \(figures.pairs) (name, class, shard) pairs off their nearest site"
            )
        }
    }

    /// CPU time of the calling thread (the compile thread), in seconds.
    static func threadCPUSeconds() -> Double { SteeringCompiler.threadCPUSeconds() }

    static func describe(_ health: SiteHealth) -> String {
        var text = health.up ? (health.saturated ? "full" : "up") : "down"
        if let models = health.models { text += " [\(models.sorted().joined(separator: ","))]" }
        return text
    }
}

/// Rebuilds the steering on every health change, and saves the state every few seconds and at
/// shutdown (the probes themselves are the `ProbeService`, stopped before this one).
struct HealthService: Service {
    let live: LiveState

    func run() async throws {
        await cancelWhenGracefulShutdown {
            await withTaskGroup(of: Void.self) { group in
                group.addTask {
                    for await _ in live.monitor.changes { await live.rebuild() }
                }
                group.addTask {
                    var ticks = 0
                    while !Task.isCancelled {
                        try? await Task.sleep(for: .milliseconds(250))
                        // Data goes stale with time alone.
                        live.monitor.publishIfChanged()
                        ticks += 1
                        if ticks % 20 == 0 { live.save() }
                        if ticks % 8 == 0 { await live.rebalance() }
                    }
                }
                await group.next()
                group.cancelAll()
            }
        }
        live.save()
        await live.prober.shutdown()
    }
}
