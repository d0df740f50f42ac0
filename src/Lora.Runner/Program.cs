namespace Lora.Runner;

public static class Program
{
    public static int Main(string[] args)
    {
        Console.WriteLine($"lora {Lora.Dsl.Version.value}, torch {TorchSharp.torch.__version__}");
        return 0;
    }
}
