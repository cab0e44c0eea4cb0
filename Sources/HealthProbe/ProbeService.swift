import ServiceLifecycle

/// The probes as a service of the daemon's group: the scheduler runs on `clock` until a
/// graceful shutdown.
public struct ProbeService<C: Clock>: Service where C.Duration == Duration {
    let scheduler: ProbeScheduler
    let clock: C

    public init(scheduler: ProbeScheduler, clock: C) {
        self.scheduler = scheduler
        self.clock = clock
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown { await scheduler.run(clock: clock) }
    }
}

extension ProbeService where C == ContinuousClock {
    public init(scheduler: ProbeScheduler) { self.init(scheduler: scheduler, clock: ContinuousClock()) }
}
