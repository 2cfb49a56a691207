"""Item 6: one hundred definitions that each hang when they are defined."""


def _forever():
    while True:
        pass


def normalize_rows(E, eps=1e-8):
    return E / E.norm(dim=-1, keepdim=True).clamp(min=eps)


def helper_0(x=_forever()):
    return x


def helper_1(x=_forever()):
    return x


def helper_2(x=_forever()):
    return x


def helper_3(x=_forever()):
    return x


def helper_4(x=_forever()):
    return x


def helper_5(x=_forever()):
    return x


def helper_6(x=_forever()):
    return x


def helper_7(x=_forever()):
    return x


def helper_8(x=_forever()):
    return x


def helper_9(x=_forever()):
    return x


def helper_10(x=_forever()):
    return x


def helper_11(x=_forever()):
    return x


def helper_12(x=_forever()):
    return x


def helper_13(x=_forever()):
    return x


def helper_14(x=_forever()):
    return x


def helper_15(x=_forever()):
    return x


def helper_16(x=_forever()):
    return x


def helper_17(x=_forever()):
    return x


def helper_18(x=_forever()):
    return x


def helper_19(x=_forever()):
    return x


def helper_20(x=_forever()):
    return x


def helper_21(x=_forever()):
    return x


def helper_22(x=_forever()):
    return x


def helper_23(x=_forever()):
    return x


def helper_24(x=_forever()):
    return x


def helper_25(x=_forever()):
    return x


def helper_26(x=_forever()):
    return x


def helper_27(x=_forever()):
    return x


def helper_28(x=_forever()):
    return x


def helper_29(x=_forever()):
    return x


def helper_30(x=_forever()):
    return x


def helper_31(x=_forever()):
    return x


def helper_32(x=_forever()):
    return x


def helper_33(x=_forever()):
    return x


def helper_34(x=_forever()):
    return x


def helper_35(x=_forever()):
    return x


def helper_36(x=_forever()):
    return x


def helper_37(x=_forever()):
    return x


def helper_38(x=_forever()):
    return x


def helper_39(x=_forever()):
    return x


def helper_40(x=_forever()):
    return x


def helper_41(x=_forever()):
    return x


def helper_42(x=_forever()):
    return x


def helper_43(x=_forever()):
    return x


def helper_44(x=_forever()):
    return x


def helper_45(x=_forever()):
    return x


def helper_46(x=_forever()):
    return x


def helper_47(x=_forever()):
    return x


def helper_48(x=_forever()):
    return x


def helper_49(x=_forever()):
    return x


def helper_50(x=_forever()):
    return x


def helper_51(x=_forever()):
    return x


def helper_52(x=_forever()):
    return x


def helper_53(x=_forever()):
    return x


def helper_54(x=_forever()):
    return x


def helper_55(x=_forever()):
    return x


def helper_56(x=_forever()):
    return x


def helper_57(x=_forever()):
    return x


def helper_58(x=_forever()):
    return x


def helper_59(x=_forever()):
    return x


def helper_60(x=_forever()):
    return x


def helper_61(x=_forever()):
    return x


def helper_62(x=_forever()):
    return x


def helper_63(x=_forever()):
    return x


def helper_64(x=_forever()):
    return x


def helper_65(x=_forever()):
    return x


def helper_66(x=_forever()):
    return x


def helper_67(x=_forever()):
    return x


def helper_68(x=_forever()):
    return x


def helper_69(x=_forever()):
    return x


def helper_70(x=_forever()):
    return x


def helper_71(x=_forever()):
    return x


def helper_72(x=_forever()):
    return x


def helper_73(x=_forever()):
    return x


def helper_74(x=_forever()):
    return x


def helper_75(x=_forever()):
    return x


def helper_76(x=_forever()):
    return x


def helper_77(x=_forever()):
    return x


def helper_78(x=_forever()):
    return x


def helper_79(x=_forever()):
    return x


def helper_80(x=_forever()):
    return x


def helper_81(x=_forever()):
    return x


def helper_82(x=_forever()):
    return x


def helper_83(x=_forever()):
    return x


def helper_84(x=_forever()):
    return x


def helper_85(x=_forever()):
    return x


def helper_86(x=_forever()):
    return x


def helper_87(x=_forever()):
    return x


def helper_88(x=_forever()):
    return x


def helper_89(x=_forever()):
    return x


def helper_90(x=_forever()):
    return x


def helper_91(x=_forever()):
    return x


def helper_92(x=_forever()):
    return x


def helper_93(x=_forever()):
    return x


def helper_94(x=_forever()):
    return x


def helper_95(x=_forever()):
    return x


def helper_96(x=_forever()):
    return x


def helper_97(x=_forever()):
    return x


def helper_98(x=_forever()):
    return x


def helper_99(x=_forever()):
    return x
