import Foundation
import GeoPolicy
import HealthProbe
import Logging
import Metrics
import ServiceLifecycle
import Synchronization
import TDNDNS

/// The policy's probe settings as probe targets, and the monitor's view as steering's input.
enum ProbePlan {
    static func targets(_ policy: Policy) -> [ProbeTarget] {
        policy.sites.filter(\.probe.isConfigured).map { site in
            let probe = site.probe
            return ProbeTarget(
                site: site.id,
                http: probe.http.map { ProbeTarget.HTTPCheck(url: $0, expect: probe.expect, body: probe.body) },
                tcp: probe.tcp, metrics: probe.metrics,
                capacity: probe.capacity.map {
                    CapacityModel(signals: $0.map { LoadSignal(names: $0.names, full: $0.full, weight: $0.weight) })
                } ?? .vLLM,
                models: probe.models, interval: probe.interval, timeout: probe.timeout, jitter: probe.effectiveJitter,
                rules: HealthRules(
                    rise: probe.rise, fall: probe.fall, highWater: probe.highWater, lowWater: probe.lowWater,
                    staleAfter: probe.effectiveStale))
        }
    }

    /// Steering's health input. A probed site the monitor does not know yet counts as down:
    /// never healthy by accident. Sites without probes are left out (they count as up).
    static func view(_ policy: Policy, _ monitor: HealthMonitor) -> HealthView {
        let live = monitor.view()
        var view = HealthView()
        for site in policy.sites where site.probe.isConfigured {
            if let state = live[site.id] {
                view.sites[site.id] = SiteHealth(
                    up: state.up, saturated: state.saturated, models: state.models, unsettled: state.unsettled,
                    lastUp: state.lastUp)
            } else {
                view.sites[site.id] = SiteHealth(up: false)
            }
        }
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
    func configureProbes(_ policy: Policy?) {
        let targets = policy.map(ProbePlan.targets) ?? []
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
            let view = ProbePlan.view(policy, monitor)
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
            let pairs = rebuilt.steering?.lastRecomputed ?? 0
            Counter(label: "tdn_steering_recomputed_pairs_total").increment(by: pairs)
            logger.debug("steering: \(pairs) (name, class) pairs decided again, \(Int(cpu * 1000)) ms CPU")
            FreedMemory.release()
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

/// Runs the probes, rebuilds the steering on every health change, and saves the state every
/// few seconds and at shutdown.
struct HealthService: Service {
    let live: LiveState
    let probes: Task<Void, Never>

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
                    }
                }
                await group.next()
                group.cancelAll()
            }
        }
        probes.cancel()
        _ = await probes.value
        live.save()
        await live.prober.shutdown()
    }
}
