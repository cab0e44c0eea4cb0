import FakeEdge
import HealthProbe
import Logging
import ServiceLifecycle
import Synchronization
import Testing

/// A clock that moves only when told: sleepers wake when `advance` passes their deadline.
final class ManualClock: Clock, Sendable {
    struct Instant: InstantProtocol {
        var offset: Duration
        func advanced(by duration: Duration) -> Instant { Instant(offset: offset + duration) }
        func duration(to other: Instant) -> Duration { other.offset - offset }
        static func < (lhs: Instant, rhs: Instant) -> Bool { lhs.offset < rhs.offset }
    }

    private struct State {
        var now = Instant(offset: .zero)
        var next = 0
        var sleepers: [Int: (deadline: Instant, continuation: CheckedContinuation<Void, Never>)] = [:]
    }
    private let state = Mutex(State())

    var now: Instant { state.withLock { $0.now } }
    var minimumResolution: Duration { .nanoseconds(1) }
    var sleeping: Int { state.withLock { $0.sleepers.count } }

    func sleep(until deadline: Instant, tolerance: Duration?) async throws {
        let id = state.withLock { state -> Int in
            state.next += 1
            return state.next
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let ready = state.withLock { state -> Bool in
                    if deadline <= state.now || Task.isCancelled { return true }
                    state.sleepers[id] = (deadline, continuation)
                    return false
                }
                if ready { continuation.resume() }
            }
        } onCancel: {
            state.withLock { $0.sleepers.removeValue(forKey: id) }?.continuation.resume()
        }
        try Task.checkCancellation()
    }

    func advance(by duration: Duration) {
        let woken = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.now = state.now.advanced(by: duration)
            let due = state.sleepers.filter { $0.value.deadline <= state.now }
            for id in due.keys { state.sleepers.removeValue(forKey: id) }
            return due.values.map(\.continuation)
        }
        for continuation in woken { continuation.resume() }
    }
}

@Suite("Probe service")
struct ProbeServiceTests {
    /// The schedule runs on the injected clock: with the clock held, no probe is due again; each
    /// interval the clock moves, every site is probed once more.
    @Test func theScheduleFollowsTheInjectedClock() async throws {
        let sites = ["a", "b", "c"]
        let fleet = try await FakeEdgeFleet.start(sites: sites, models: ["m"])
        let prober = Prober()
        let monitor = HealthMonitor()
        let scheduler = ProbeScheduler(prober: prober, monitor: monitor, startSpread: 0.01)
        let targets = sites.map {
            ProbeTarget(site: $0, http: .init(url: fleet.url($0) + "/health"), interval: 10, timeout: 2, jitter: 0)
        }
        monitor.configure(targets)
        scheduler.update(targets)
        let clock = ManualClock()
        var logger = Logger(label: "tdn.probe")
        logger.logLevel = .warning
        let group = ServiceGroup(
            configuration: .init(
                services: [.init(service: ProbeService(scheduler: scheduler, clock: clock))], logger: logger))
        let running = Task { try await group.run() }
        /// Moves the clock in small steps until `count` probes have completed (real time passes
        /// for the HTTP requests themselves).
        func settle(_ count: Int) async throws {
            for _ in 0..<500 where scheduler.statistics.completed < count {
                clock.advance(by: .milliseconds(1))
                try await Task.sleep(for: .milliseconds(5))
            }
        }
        try await settle(3)
        #expect(scheduler.statistics.completed == 3, "the first round, spread over 10 ms of the clock")
        // Held clock: a second of real time, no probe due.
        try await Task.sleep(for: .seconds(1))
        #expect(scheduler.statistics.started == 3)
        for round in 2...4 {
            clock.advance(by: .seconds(10))
            try await settle(3 * round)
            #expect(scheduler.statistics.completed == 3 * round, "round \(round)")
            #expect(fleet.site("b")?.requests["health"] == round)
        }
        await group.triggerGracefulShutdown()
        try await running.value
        await prober.shutdown()
        await fleet.stop()
    }
}
