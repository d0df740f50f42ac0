using Lora.Core.IO;
using Microsoft.FSharp.Core;

namespace Lora.Fuzz;

/// One fuzz target per parser of outside input. Each takes the raw bytes of one input file.
public static class Targets
{
    /// The exception types that mean "this input was rejected with a message": not crashes.
    public static readonly Type[] Expected = { typeof(InvalidDataException) };

    static readonly string scratch = Path.Combine(
        Directory.Exists("/dev/shm") ? "/dev/shm" : Path.GetTempPath(), $"lora-fuzz-{Environment.ProcessId}");

    /// Parsers that read files get the bytes through a scratch file: the real code path.
    static string AsFile(byte[] data, string extension)
    {
        var path = scratch + extension;
        File.WriteAllBytes(path, data);
        return path;
    }

    public static readonly IReadOnlyDictionary<string, Action<byte[]>> All = new Dictionary<string, Action<byte[]>>
    {
        ["safetensors"] = data =>
        {
            foreach (var t in Safetensors.Load(AsFile(data, ".safetensors")).Values) t.Dispose();
        },
        // IDX (MNIST format), raw or gzip: the reader sniffs the gzip magic itself
        ["idx"] = data => Lora.Core.Data.IdxReader.Read(AsFile(data, ".idx")),
        // CIFAR binary batches: the first byte picks CIFAR-10 (1 label byte) or CIFAR-100 (2), so
        // one corpus covers both record layouts
        ["cifar"] = data =>
        {
            bool hundred = data.Length > 0 && (data[0] & 1) == 1;
            var body = data.Length > 0 ? data[1..] : data;
            var classes = hundred ? Enumerable.Range(0, 100).Select(i => i.ToString()).ToArray() : Lora.Core.Data.Cifar.Cifar10Classes.ToArray();
            Lora.Core.Data.Cifar.Read([AsFile(body, ".bin")], hundred ? 2 : 1, true, classes);
        },
        // PEFT adapter_config.json: the folder holds just the config
        ["adapter_config"] = data =>
        {
            Directory.CreateDirectory(scratch + ".adapter");
            File.WriteAllBytes(Path.Combine(scratch + ".adapter", "adapter_config.json"), data);
            Lora.Core.Tuning.AdapterCheckpoint.ReadConfig(scratch + ".adapter");
        },
        // YAML specs: every problem must come back as an error with a position, never as an exception
        ["yaml"] = data =>
        {
            var (experiments, errors, _) = Lora.Dsl.YamlSpec.parse("fuzz.yaml", System.Text.Encoding.UTF8.GetString(data)).ToValueTuple();
            if (errors.IsEmpty) Lora.Dsl.Validation.suite(FSharpFunc<string, bool>.FromConverter(_ => true), experiments);
        },
    };

    public static void Guarded(Action<byte[]> target, byte[] data)
    {
        try { target(data); }
        catch (Exception e) when (Expected.Contains(e.GetType()) && e.Message.Length > 0) { }
    }
}
