import Foundation
import Testing

/// A task executor with a thread of its own.
///
/// `swift test` runs tests in parallel on the cooperative pool, which has one thread per core
/// (two on the CI machine). While CPU-bound tests fill it, a task waking from `Task.sleep` or
/// from a socket waits for a free pool thread — seconds, not milliseconds — and a test asserting
/// "closed within 1 s" fails for reasons that are not the server's; a test that blocks in a
/// socket call holds a pool thread the same way. A test run under the `.cpuBound` or `.timing`
/// trait keeps its task, so `#expect` is still attributed to it, but its jobs, and its child
/// tasks', run on a thread of their own, which the kernel schedules against the pool's threads
/// like any other: the CPU-bound tests take turns on one thread (so that they cannot crowd out
/// everything else either), and each timing test has one to itself.
final class OwnThreadExecutor: TaskExecutor, @unchecked Sendable {
    /// Shared by the CPU-bound tests, for the whole run.
    static let compute = OwnThreadExecutor(name: "cpu-bound tests")

    private let condition = NSCondition()
    private var jobs: [UnownedJob] = []
    private var finished = false

    init(name: String) {
        let thread = Thread { [self] in loop() }
        thread.name = name
        thread.start()
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        condition.lock()
        if finished {
            // Work that outlives the test (a `Task` it left behind) goes to the pool.
            condition.unlock()
            globalConcurrentExecutor.enqueue(job)
            return
        }
        jobs.append(job)
        condition.signal()
        condition.unlock()
    }

    /// Lets the thread end once the jobs already queued have run.
    func finish() {
        condition.lock()
        finished = true
        condition.signal()
        condition.unlock()
    }

    private func loop() {
        while true {
            condition.lock()
            while jobs.isEmpty && !finished { condition.wait() }
            if jobs.isEmpty {
                condition.unlock()
                return
            }
            let batch = jobs
            jobs.removeAll(keepingCapacity: true)
            condition.unlock()
            for job in batch { job.runSynchronously(on: asUnownedTaskExecutor()) }
        }
    }
}

/// Runs a test, or every test of a suite, off the cooperative pool: see `OwnThreadExecutor`.
public struct OwnThreadTrait: TestTrait, SuiteTrait, TestScoping {
    let shared: Bool
    public var isRecursive: Bool { true }

    public func provideScope(
        for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void
    ) async throws {
        // A suite's own scope is entered once around all its tests: nothing to do there.
        guard testCase != nil else { return try await function() }
        if shared { return try await withTaskExecutorPreference(OwnThreadExecutor.compute) { try await function() } }
        let executor = OwnThreadExecutor(name: test.name)
        defer { executor.finish() }
        try await withTaskExecutorPreference(executor) { try await function() }
    }
}

extension Trait where Self == OwnThreadTrait {
    /// The test computes for seconds: it takes turns with the others on one thread. What it
    /// starts as child tasks waits for that thread too, so a test that serves or awaits
    /// in-process HTTP against a deadline is `.timing` instead.
    public static var cpuBound: Self { OwnThreadTrait(shared: true) }
    /// The test asserts on elapsed time, or blocks in socket calls: a thread of its own.
    public static var timing: Self { OwnThreadTrait(shared: false) }
}
