import Metrics
import Synchronization

/// Probes every target every `interval` (± `jitter`) seconds with at most `maxConcurrent` probes
/// in flight. Due times sit in a min-heap; each probe is scheduled from its previous due time, so
/// a slow probe does not push its site's schedule back, and the jitter spreads sites out so that
/// thousands of targets do not fire at once. New targets start within their first interval.
public final class ProbeScheduler: Sendable {
    /// Counters for the benchmark and `/status`.
    public struct Statistics: Sendable {
        public var started = 0
        public var completed = 0
        /// The most a probe started after its due time (seconds).
        public var lagMax = 0.0
        /// Lags in 1 ms buckets up to 10 s (for percentiles).
        public var lagBuckets = [Int](repeating: 0, count: 10_001)

        public init() {}

        public func lagPercentile(_ fraction: Double) -> Double {
            let total = lagBuckets.reduce(0, +)
            guard total > 0 else { return 0 }
            var seen = 0
            for (index, count) in lagBuckets.enumerated() {
                seen += count
                if Double(seen) >= fraction * Double(total) { return Double(index) / 1000 }
            }
            return 10
        }
    }

    private let prober: Prober
    private let monitor: HealthMonitor
    private let limiter: Limiter
    private let targets = Mutex<(generation: Int, list: [String: ProbeTarget])>((0, [:]))
    private let stats = Mutex(Statistics())
    /// How soon new targets start: spread over this many seconds (or their interval if shorter).
    private let startSpread: Double

    public init(prober: Prober, monitor: HealthMonitor, maxConcurrent: Int = 256, startSpread: Double = 0.5) {
        self.prober = prober
        self.monitor = monitor
        self.limiter = Limiter(maxConcurrent)
        self.startSpread = startSpread
    }

    /// Replaces the targets (a reload): new sites are scheduled, removed ones dropped, changed
    /// settings apply from their next probe.
    public func update(_ list: [ProbeTarget]) {
        targets.withLock { state in
            state.generation += 1
            state.list = Dictionary(list.map { ($0.site, $0) }, uniquingKeysWith: { _, last in last })
        }
    }

    public var statistics: Statistics { stats.withLock { $0 } }

    /// Runs until cancelled, on `clock` (a test's clock drives the schedule; the probes' own
    /// timeouts stay on the network's time).
    public func run<C: Clock>(clock: C = ContinuousClock()) async where C.Duration == Duration {
        let origin = clock.now
        func now() -> Double {
            let duration = origin.duration(to: clock.now)
            return Double(duration.components.seconds) + Double(duration.components.attoseconds) * 1e-18
        }
        var heap = DueHeap()
        var known: [String: ProbeTarget] = [:]
        var generation = -1
        var random = SystemRandomNumberGenerator()
        let lag = Timer(label: "tdn_probe_schedule_lag_seconds")
        await withDiscardingTaskGroup { group in
            while !Task.isCancelled {
                let current = targets.withLock { $0 }
                if current.generation != generation {
                    generation = current.generation
                    let start = now()
                    for (site, target) in current.list where known[site] == nil {
                        heap.push(
                            start
                                + Double.random(in: 0..<max(0.001, min(startSpread, target.interval)), using: &random),
                            site)
                    }
                    known = current.list
                }
                guard let (due, site) = heap.peek() else {
                    try? await clock.sleep(for: .milliseconds(50))
                    continue
                }
                let time = now()
                if due > time {
                    try? await clock.sleep(for: .milliseconds(Int64(min(due - time, 0.05) * 1000) + 1))
                    continue
                }
                heap.pop()
                guard let target = known[site] else { continue }  // removed by a reload
                await limiter.acquire()
                let started = now()
                let late = max(0, started - due)
                var next = due + target.interval
                if target.jitter > 0 { next += Double.random(in: -target.jitter...target.jitter, using: &random) }
                // Far behind (the machine stalled): start again from now rather than firing a burst.
                if next < started { next = started + target.interval }
                heap.push(next, site)
                stats.withLock { stats in
                    stats.started += 1
                    stats.lagMax = max(stats.lagMax, late)
                    stats.lagBuckets[min(10_000, Int(late * 1000))] += 1
                }
                lag.recordNanoseconds(Int64(late * 1e9))
                group.addTask { [self] in
                    let result = await prober.probe(target)
                    monitor.record(site: target.site, result: result)
                    stats.withLock { $0.completed += 1 }
                    await limiter.release()
                }
            }
        }
    }
}

/// A min-heap of (due time, site).
struct DueHeap {
    private var items: [(Double, String)] = []

    func peek() -> (Double, String)? { items.first }

    mutating func push(_ due: Double, _ site: String) {
        items.append((due, site))
        var child = items.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard items[child].0 < items[parent].0 else { break }
            items.swapAt(child, parent)
            child = parent
        }
    }

    @discardableResult
    mutating func pop() -> (Double, String)? {
        guard !items.isEmpty else { return nil }
        items.swapAt(0, items.count - 1)
        let top = items.removeLast()
        var parent = 0
        while true {
            let left = 2 * parent + 1
            let right = left + 1
            var smallest = parent
            if left < items.count && items[left].0 < items[smallest].0 { smallest = left }
            if right < items.count && items[right].0 < items[smallest].0 { smallest = right }
            if smallest == parent { break }
            items.swapAt(parent, smallest)
            parent = smallest
        }
        return top
    }
}

/// A counting semaphore for async code: bounds the probes in flight.
actor Limiter {
    private var available: Int
    private var waiters: [CheckedContinuation<Void, Never>] = []

    init(_ count: Int) { available = max(1, count) }

    func acquire() async {
        if available > 0 {
            available -= 1
            return
        }
        await withCheckedContinuation { waiters.append($0) }
    }

    func release() {
        if waiters.isEmpty {
            available += 1
        } else {
            waiters.removeFirst().resume()
        }
    }
}
