"""A local Feishu Open Platform emulator that the real lark-oapi SDK talks to.

    from connectors.feishu.emulator import Emulator, FaultPlan

    with Emulator(app_id="cli_demo", app_secret="demo-secret") as emu:
        app = emu.create_app("demo")
        table = emu.create_table(app, "videos", [("名称", 1), ("状态", 3)])
        client = lark.Client.builder().app_id("cli_demo").app_secret("demo-secret").domain(emu.url).build()
"""
from .emulator import Emulator
from .errors import ApiError
from .faults import FaultPlan
from .messaging import webhook_sign

__all__ = ["ApiError", "Emulator", "FaultPlan", "webhook_sign"]
