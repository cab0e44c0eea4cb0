import HealthProbe
import Testing

@Suite("Site state machine")
struct SiteStateTests {
    @Test func unknownUntilProbedThenFirstResultCounts() {
        var state = SiteState()
        #expect(state.up == nil && state.effective(at: 0).up == false, "never healthy by accident")
        let changed1 = state.recordProbe(success: true, at: 1, detail: "200")
        #expect(changed1)
        #expect(state.up == true && state.effective(at: 1).up)
    }

    @Test func fallAndRiseCounts() {
        var state = SiteState(rules: HealthRules(rise: 2, fall: 3))
        state.recordProbe(success: true, at: 0, detail: "200")
        // Two failures are not enough with fall 3; a success in between resets the count.
        let changed2 = state.recordProbe(success: false, at: 5, detail: "timeout")
        #expect(!changed2)
        let changed3 = state.recordProbe(success: false, at: 10, detail: "timeout")
        #expect(!changed3)
        #expect(state.nearChange(at: 10))
        let changed4 = state.recordProbe(success: true, at: 15, detail: "200")
        #expect(!changed4)
        let changed5 = state.recordProbe(success: false, at: 20, detail: "timeout")
        #expect(!changed5)
        let changed6 = state.recordProbe(success: false, at: 25, detail: "timeout")
        #expect(!changed6)
        let changed7 = state.recordProbe(success: false, at: 30, detail: "timeout")
        #expect(changed7)
        #expect(state.up == false && state.since == 30 && state.reason == "down: timeout")
        // Up again after rise 2.
        let changed8 = state.recordProbe(success: true, at: 35, detail: "200")
        #expect(!changed8)
        let changed9 = state.recordProbe(success: true, at: 40, detail: "200")
        #expect(changed9)
        #expect(state.up == true && state.reason == "up: 200")
    }

    @Test func capacityHysteresis() {
        var state = SiteState(rules: HealthRules(highWater: 0.9, lowWater: 0.75))
        state.recordProbe(success: true, at: 0, detail: "200")
        let changed10 = state.recordCapacity(0.85, at: 1)
        #expect(!changed10)
        let changed11 = state.recordCapacity(0.95, at: 2)
        #expect(changed11, "full above the high-water mark")
        let changed12 = state.recordCapacity(0.8, at: 3)
        #expect(!changed12, "still full between the marks: no flapping")
        #expect(state.effective(at: 3).saturated)
        let changed13 = state.recordCapacity(0.7, at: 4)
        #expect(changed13, "room again below the low-water mark")
        #expect(!state.effective(at: 4).saturated)
    }

    @Test func staleCapacityCountsAsFull() {
        var state = SiteState(rules: HealthRules(staleAfter: 15))
        state.recordProbe(success: true, at: 0, detail: "200")
        state.recordCapacity(0.1, at: 0)
        #expect(!state.effective(at: 10).saturated)
        #expect(state.nearChange(at: 10), "data half-way to stale: shorten TTLs")
        #expect(state.effective(at: 16).saturated, "older than 15 s: full, not empty")
        state.recordCapacity(0.1, at: 20)
        #expect(!state.effective(at: 20).saturated)
    }

    @Test func forcedStatesWinAndAreCleared() {
        var state = SiteState()
        state.recordProbe(success: true, at: 0, detail: "200")
        state.force(.down, at: 1)
        #expect(state.effective(at: 1).up == false)
        state.force(.drain, at: 2)
        #expect(state.effective(at: 2).up == false && state.reason == "forced drain by an operator")
        state.recordProbe(success: false, at: 3, detail: "refused")
        state.force(.up, at: 4)
        #expect(state.effective(at: 4).up, "forced up whatever the probes say")
        state.force(nil, at: 5)
        #expect(state.effective(at: 5).up, "one failure is not yet down with fall 3")
    }
}
