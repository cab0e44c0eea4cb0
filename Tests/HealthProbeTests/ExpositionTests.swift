import HealthProbe
import Testing

/// Exposition text in the shapes vLLM serves on /metrics: v0 (model_name label,
/// vllm:gpu_cache_usage_perc) and v1 (an engine label per engine, vllm:kv_cache_usage_perc),
/// with prometheus_client's process and GC series around them.
enum VLLM {
    static let v0 = """
        # HELP python_gc_objects_collected_total Objects collected during gc
        # TYPE python_gc_objects_collected_total counter
        python_gc_objects_collected_total{generation="0"} 10422.0
        python_gc_objects_collected_total{generation="1"} 2301.0
        # HELP vllm:num_requests_running Number of requests currently running on GPU.
        # TYPE vllm:num_requests_running gauge
        vllm:num_requests_running{model_name="meta-llama/Llama-2-13b-chat-hf"} 64.0
        # HELP vllm:num_requests_swapped Number of requests swapped to CPU.
        # TYPE vllm:num_requests_swapped gauge
        vllm:num_requests_swapped{model_name="meta-llama/Llama-2-13b-chat-hf"} 0.0
        # HELP vllm:num_requests_waiting Number of requests waiting to be processed.
        # TYPE vllm:num_requests_waiting gauge
        vllm:num_requests_waiting{model_name="meta-llama/Llama-2-13b-chat-hf"} 4.0
        # HELP vllm:gpu_cache_usage_perc GPU KV-cache usage. 1 means 100 percent usage.
        # TYPE vllm:gpu_cache_usage_perc gauge
        vllm:gpu_cache_usage_perc{model_name="meta-llama/Llama-2-13b-chat-hf"} 0.38
        # HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
        # TYPE vllm:time_to_first_token_seconds histogram
        vllm:time_to_first_token_seconds_bucket{le="0.001",model_name="meta-llama/Llama-2-13b-chat-hf"} 0.0
        vllm:time_to_first_token_seconds_bucket{le="0.5",model_name="meta-llama/Llama-2-13b-chat-hf"} 97.0
        vllm:time_to_first_token_seconds_bucket{le="+Inf",model_name="meta-llama/Llama-2-13b-chat-hf"} 120.0
        vllm:time_to_first_token_seconds_count{model_name="meta-llama/Llama-2-13b-chat-hf"} 120.0
        vllm:time_to_first_token_seconds_sum{model_name="meta-llama/Llama-2-13b-chat-hf"} 31.7
        """

    static let v1 = """
        # HELP vllm:num_requests_running Number of requests in model execution batches.
        # TYPE vllm:num_requests_running gauge
        vllm:num_requests_running{engine="0",model_name="Qwen/Qwen3-8B"} 100.0
        vllm:num_requests_running{engine="1",model_name="Qwen/Qwen3-8B"} 90.0
        # HELP vllm:num_requests_waiting Number of requests waiting to be processed.
        # TYPE vllm:num_requests_waiting gauge
        vllm:num_requests_waiting{engine="0",model_name="Qwen/Qwen3-8B"} 20.0
        vllm:num_requests_waiting{engine="1",model_name="Qwen/Qwen3-8B"} 20.0
        # HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
        # TYPE vllm:kv_cache_usage_perc gauge
        vllm:kv_cache_usage_perc{engine="0",model_name="Qwen/Qwen3-8B"} 0.41
        vllm:kv_cache_usage_perc{engine="1",model_name="Qwen/Qwen3-8B"} 0.44
        """
}

@Suite("Prometheus exposition format")
struct ExpositionTests {
    @Test func parsesVLLMOutput() throws {
        let samples = try ExpositionParser.parse(VLLM.v0)
        #expect(samples.count == 11)
        let running = try #require(samples.first { $0.name == "vllm:num_requests_running" })
        #expect(running.labels == ["model_name": "meta-llama/Llama-2-13b-chat-hf"])
        #expect(running.value == 64)
        let inf = try #require(samples.first { $0.labels["le"] == "+Inf" })
        #expect(inf.name == "vllm:time_to_first_token_seconds_bucket" && inf.value == 120)
    }

    @Test func valuesEscapesAndTimestamps() throws {
        let samples = try ExpositionParser.parse(
            #"""
            # a free comment
            up 1
            temperature{room="a \"quoted\" name",path="C:\\dir",note="two\nlines"} -3.5e2 1700000000000
            ratio NaN
            limit +Inf
            floor -Inf
              spaced_metric  { a = "1" , b="2" }  7
            empty_labels{} 2
            """#)
        #expect(
            samples.map(\.name) == ["up", "temperature", "ratio", "limit", "floor", "spaced_metric", "empty_labels"])
        #expect(samples[1].labels == ["room": "a \"quoted\" name", "path": "C:\\dir", "note": "two\nlines"])
        #expect(samples[1].value == -350 && samples[1].timestamp == 1_700_000_000_000)
        #expect(samples[2].value.isNaN)
        #expect(samples[3].value == .infinity && samples[4].value == -.infinity)
        #expect(samples[5].labels == ["a": "1", "b": "2"] && samples[5].value == 7)
        #expect(samples[6].labels.isEmpty)
    }

    @Test(arguments: [
        ("metric{a=\"1\" 2", "line 1: expected ',' or '}' after label a"),
        ("metric{a=\"1", "line 1: value of label a not closed"),
        ("metric{a=1} 2", "line 1: expected a quoted value for label a"),
        ("metric two", "line 1: 'two' is not a sample value"),
        ("ok 1\n{a=\"1\"} 2", "line 2: expected a metric name"),
        ("metric{a=\"\\q\"} 1", "line 1: unknown escape \\q in label a"),
        ("metric 1 soon", "line 1: 'soon' is not a timestamp"),
    ])
    func rejectsMalformedLines(_ text: String, _ message: String) {
        #expect(throws: ExpositionError.self) { try ExpositionParser.parse(text) }
        do {
            _ = try ExpositionParser.parse(text)
        } catch {
            #expect(error.description == message)
        }
    }
}

@Suite("Capacity from engine metrics")
struct CapacityTests {
    @Test func vLLMv0Load() throws {
        let reading = try CapacityModel.vLLM.load(from: ExpositionParser.parse(VLLM.v0))
        // running 64/256 = 0.25, waiting 4/32 = 0.125, KV cache 0.38/0.95 = 0.4: the largest wins.
        #expect(abs(reading.load - 0.4) < 1e-9)
        #expect(
            reading.parts.map(\.series) == [
                "vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:gpu_cache_usage_perc",
            ])
    }

    @Test func vLLMv1SumsEnginesAndUsesTheNewName() throws {
        let reading = try CapacityModel.vLLM.load(from: ExpositionParser.parse(VLLM.v1))
        // running 190/256 ≈ 0.742; waiting 40/32 → full.
        #expect(reading.load == 1)
        #expect(reading.parts.map(\.value) == [190, 40, 0.85])
        #expect(reading.parts[2].series == "vllm:kv_cache_usage_perc")
    }

    @Test func missingOrNaNSeriesCountAsFull() throws {
        let partial = try ExpositionParser.parse("vllm:num_requests_running 1\nvllm:num_requests_waiting 0\n")
        #expect(try CapacityModel.vLLM.load(from: partial).load == 1, "no KV-cache series: not assumed empty")
        let nan = try ExpositionParser.parse(
            "vllm:num_requests_running NaN\nvllm:num_requests_waiting 0\nvllm:kv_cache_usage_perc 0.1\n")
        #expect(try CapacityModel.vLLM.load(from: nan).load == 1)
        let idle = try ExpositionParser.parse(
            "vllm:num_requests_running 0\nvllm:num_requests_waiting 0\nvllm:kv_cache_usage_perc 0.0\n")
        #expect(try CapacityModel.vLLM.load(from: idle).load == 0)
    }

    @Test func otherEnginesAreDescribedBySignals() throws {
        // TGI's queue and batch gauges, with operator-chosen "full" points.
        let tgi = CapacityModel(signals: [
            LoadSignal(names: ["tgi_queue_size"], full: 50),
            LoadSignal(names: ["tgi_batch_current_size"], full: 32),
        ])
        let reading = try tgi.load(from: try ExpositionParser.parse("tgi_queue_size 10\ntgi_batch_current_size 16\n"))
        #expect(reading.load == 0.5)
    }
}
