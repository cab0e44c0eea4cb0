import Foundation

/// Group commit: batches that arrive while a transaction is being written wait for the next
/// one, which writes them all with a single fsync. Each caller gets its own batch's outcome
/// once the transaction holding it is on disk.
public actor IngestQueue {
    private let store: LedgerStore
    private let rates: [ExactKey: Rate]
    private var waiting: [(LedgerStore.Pending, CheckedContinuation<Result<LedgerStore.Outcome, Error>, Never>)] = []
    private var writing = false
    /// Records per transaction at most.
    private let maxRecords: Int

    public init(store: LedgerStore, rates: [ExactKey: Rate], maxRecords: Int = 5_000) {
        self.store = store
        self.rates = rates
        self.maxRecords = maxRecords
    }

    /// Stores one batch (all or nothing); returns when it is durable.
    public func submit(_ batch: LedgerStore.Pending) async throws -> LedgerStore.Outcome {
        let result = await withCheckedContinuation { continuation in
            waiting.append((batch, continuation))
            if !writing {
                writing = true
                Task { await self.drain() }
            }
        }
        return try result.get()
    }

    private func drain() async {
        while !waiting.isEmpty {
            var taken: [(LedgerStore.Pending, CheckedContinuation<Result<LedgerStore.Outcome, Error>, Never>)] = []
            var records = 0
            while let first = waiting.first, taken.isEmpty || records + first.0.records.count <= maxRecords {
                taken.append(waiting.removeFirst())
                records += first.0.records.count
            }
            let batches = taken.map(\.0)
            let store = self.store
            let rates = self.rates
            // The write itself runs off the actor (and off the cooperative pool's other work).
            let result: Result<[LedgerStore.Outcome], Error> = await Self.write {
                Result { try store.append(batches, rates: rates) }
            }
            switch result {
            case .success(let outcomes):
                for (entry, outcome) in zip(taken, outcomes) { entry.1.resume(returning: .success(outcome)) }
            case .failure(let error):
                for entry in taken { entry.1.resume(returning: .failure(error)) }
            }
        }
        writing = false
    }

    private static let queue = DispatchQueue(label: "tdn.ledger.write")

    private static func write<T: Sendable>(_ work: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { continuation in queue.async { continuation.resume(returning: work()) } }
    }
}
