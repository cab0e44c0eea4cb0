import ArgumentParser
import HealthProbe

#if canImport(Glibc)
import Glibc
#endif

/// `tdn-probe-bench`: runs tdnd's probe scheduler, prober and health monitor against N targets
/// for a while and prints probes per second, schedule lag and CPU time.
@available(macOS 10.15, *)
struct ProbeBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "tdn-probe-bench")

    @Option(help: "Base URL of the fake edges, e.g. http://127.0.0.1:9000 (sites are site0 … siteN-1).")
    var edges: String

    @Option(help: "Number of targets.")
    var targets = 10_000

    @Option(help: "Probe interval in seconds.")
    var interval = 5.0

    @Option(help: "Probe timeout in seconds.")
    var timeout = 2.0

    @Option(help: "Seconds to measure (after one warm-up interval).")
    var duration = 30.0

    @Option(help: "Probes in flight at most.")
    var concurrency = 256

    @Option(help: "What each target probes: health, metrics or both.")
    var kind = "health"

    func run() async throws { try await execute() }

    func execute() async throws {
        let monitor = HealthMonitor()
        let prober = Prober()
        let scheduler = ProbeScheduler(
            prober: prober, monitor: monitor, maxConcurrent: concurrency, startSpread: interval)
        let list = (0..<targets).map { index in
            let base = "\(edges)/site\(index)"
            return ProbeTarget(
                site: "site\(index)",
                http: kind == "metrics" ? nil : ProbeTarget.HTTPCheck(url: base + "/health"),
                metrics: kind == "health" ? nil : base + "/metrics",
                interval: interval, timeout: timeout)
        }
        monitor.configure(list)
        scheduler.update(list)
        let task = Task { await scheduler.run() }
        try await Task.sleep(for: .seconds(interval))
        let before = scheduler.statistics
        let cpuBefore = cpuSeconds()
        let start = ContinuousClock.now
        try await Task.sleep(for: .seconds(duration))
        let after = scheduler.statistics
        let elapsed = ContinuousClock.now - start
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
        let cpu = cpuSeconds() - cpuBefore
        task.cancel()
        var lag = ProbeScheduler.Statistics()
        for index in 0..<lag.lagBuckets.count {
            lag.lagBuckets[index] = after.lagBuckets[index] - before.lagBuckets[index]
        }
        let completed = after.completed - before.completed
        let up = monitor.view { up, _, _, _, _ in up }.values.filter { $0 }.count
        let expected = Double(targets) / interval
        print("targets \(targets) interval \(interval)s kind \(kind) concurrency \(concurrency)")
        print(
            String(
                format: "probes/s %.0f (schedule needs %.0f); completed %d in %.1f s", Double(completed) / seconds,
                expected, completed, seconds))
        print(
            String(
                format: "schedule lag p50 %.1f ms, p99 %.1f ms, max %.1f ms", lag.lagPercentile(0.5) * 1000,
                lag.lagPercentile(0.99) * 1000, after.lagMax * 1000))
        print(
            String(
                format: "prober CPU %.2f s = %.0f%% of one core; %.1f µs per probe", cpu, 100 * cpu / seconds,
                1e6 * cpu / Double(max(1, completed))))
        print("sites up at the end: \(up) of \(targets)")
        await prober.shutdown()
    }
}

func cpuSeconds() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(
        usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
}

do {
    let command = try ProbeBench.parse()
    try await command.execute()
} catch {
    ProbeBench.exit(withError: error)
}
