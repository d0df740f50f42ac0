using System.Reflection;
using System.Runtime.InteropServices;

namespace Lora.Core.Training;

/// The message of a failure as one line for a person. libtorch's errors (c10::Error, surfaced by
/// TorchSharp as ExternalException) carry a C++ stack trace after the first line ("Exception raised
/// from ...", "frame #0: ..."): only what precedes it is kept. Wrappers that add nothing
/// (AggregateException from a parallel loader, TargetInvocationException) are looked through.
public static class NativeError
{
    public static Exception Unwrap(Exception e)
    {
        while (true)
        {
            if (e is AggregateException a && a.Flatten().InnerExceptions is { Count: > 0 } inner) e = inner[0];
            else if (e is TargetInvocationException { InnerException: { } t }) e = t;
            else return e;
        }
    }

    public static string Summary(Exception e)
    {
        e = Unwrap(e);
        var message = e.Message;
        if (e is ExternalException || message.Contains("frame #", StringComparison.Ordinal) || message.Contains("Exception raised from", StringComparison.Ordinal))
        {
            var lines = message.Split('\n').Select(l => l.Trim()).Where(l => l.Length > 0)
                .TakeWhile(l => !l.StartsWith("Exception raised from", StringComparison.Ordinal) && !l.StartsWith("frame #", StringComparison.Ordinal));
            var first = string.Join(" ", lines);
            return "libtorch: " + (first.Length > 0 ? first : "native error");
        }
        return string.Join(" ", message.Split('\n').Select(l => l.Trim()).Where(l => l.Length > 0));
    }
}
