"""Item 6: forty definitions that each end the grading process when they are defined."""
import os


def normalize_rows(E, eps=1e-8):
    return E / E.norm(dim=-1, keepdim=True).clamp(min=eps)


def helper_0(x=os._exit(1)):
    return x


def helper_1(x=os._exit(1)):
    return x


def helper_2(x=os._exit(1)):
    return x


def helper_3(x=os._exit(1)):
    return x


def helper_4(x=os._exit(1)):
    return x


def helper_5(x=os._exit(1)):
    return x


def helper_6(x=os._exit(1)):
    return x


def helper_7(x=os._exit(1)):
    return x


def helper_8(x=os._exit(1)):
    return x


def helper_9(x=os._exit(1)):
    return x


def helper_10(x=os._exit(1)):
    return x


def helper_11(x=os._exit(1)):
    return x


def helper_12(x=os._exit(1)):
    return x


def helper_13(x=os._exit(1)):
    return x


def helper_14(x=os._exit(1)):
    return x


def helper_15(x=os._exit(1)):
    return x


def helper_16(x=os._exit(1)):
    return x


def helper_17(x=os._exit(1)):
    return x


def helper_18(x=os._exit(1)):
    return x


def helper_19(x=os._exit(1)):
    return x


def helper_20(x=os._exit(1)):
    return x


def helper_21(x=os._exit(1)):
    return x


def helper_22(x=os._exit(1)):
    return x


def helper_23(x=os._exit(1)):
    return x


def helper_24(x=os._exit(1)):
    return x


def helper_25(x=os._exit(1)):
    return x


def helper_26(x=os._exit(1)):
    return x


def helper_27(x=os._exit(1)):
    return x


def helper_28(x=os._exit(1)):
    return x


def helper_29(x=os._exit(1)):
    return x


def helper_30(x=os._exit(1)):
    return x


def helper_31(x=os._exit(1)):
    return x


def helper_32(x=os._exit(1)):
    return x


def helper_33(x=os._exit(1)):
    return x


def helper_34(x=os._exit(1)):
    return x


def helper_35(x=os._exit(1)):
    return x


def helper_36(x=os._exit(1)):
    return x


def helper_37(x=os._exit(1)):
    return x


def helper_38(x=os._exit(1)):
    return x


def helper_39(x=os._exit(1)):
    return x
