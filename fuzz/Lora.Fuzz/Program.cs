using SharpFuzz;

namespace Lora.Fuzz;

/// AFL++ entry point (through SharpFuzz): `Lora.Fuzz TARGET` reads inputs in persistent mode and
/// feeds them to one parser. A parser may reject input only with the exception type it documents
/// for bad input (<see cref="Targets.Expected"/>); anything else escapes and AFL++ records a crash.
/// `Lora.Fuzz TARGET --replay FILE...` runs inputs once, outside AFL++, to reproduce a finding.
public static class Program
{
    public static int Main(string[] args)
    {
        if (args.Length == 0 || !Targets.All.TryGetValue(args[0], out var target))
        {
            Console.Error.WriteLine($"usage: Lora.Fuzz TARGET [--replay FILE...]; targets: {string.Join(", ", Targets.All.Keys)}");
            return 2;
        }
        if (args.Length > 1 && args[1] == "--replay")
        {
            int crashes = 0;
            foreach (var file in args.Skip(2))
            {
                try { Targets.Guarded(target, File.ReadAllBytes(file)); Console.WriteLine($"{file}: ok"); }
                catch (Exception e) { crashes++; Console.WriteLine($"{file}: CRASH {e.GetType().Name}: {e.Message}"); }
            }
            return crashes == 0 ? 0 : 1;
        }
        Fuzzer.Run(stream =>
        {
            using var ms = new MemoryStream();
            stream.CopyTo(ms);
            Targets.Guarded(target, ms.ToArray());
        });
        return 0;
    }
}
